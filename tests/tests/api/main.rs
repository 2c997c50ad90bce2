//! The end-to-end tests, in one binary (each binary links the whole stack, and a two-core machine
//! spends minutes linking a dozen): real servers on ephemeral ports, real HTTP, real SQLite files
//! and real PostgreSQL databases. One module per topic; what they share is in [`helpers`] (servers
//! and databases) and [`client_support`] (client devices, a base-protocol server, proxies).

mod helpers;

mod client_support;

mod amqp;
mod auth;
mod bad_input;
mod browser;
mod client_async;
mod client_base_protocol;
mod client_live;
mod client_notify;
mod client_preconditions;
mod client_random;
mod client_relations;
mod client_status;
mod client_sync;
mod client_typed;
mod concurrency;
mod console;
mod deployment;
mod docs;
mod durability;
mod faults;
mod hostile;
mod long_poll;
mod multi_instance;
mod openapi;
mod outbox;
mod outbox_examples;
mod preconditions;
mod protocol;
mod static_files;
mod store_clock;
mod stores;
mod todo_cli;
mod tombstones;
mod validation;
