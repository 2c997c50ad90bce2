//! Runnable programs that show the sync server and client at work; each is a binary of this crate.
