//! One AMQP subscription: events published to a RabbitMQ exchange, persistent, with publisher
//! confirms, over one connection that is opened again after any failure.

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use super::Sent;
use super::config::AmqpConfig;
use super::schedule::Answer;
use crate::store::outbox::EventData;

/// The publisher of one subscription.
pub struct Amqp {
    config: AmqpConfig,
    /// The open connection and its confirming channel, if any.
    open: Mutex<Option<(Connection, Channel)>>,
}

impl std::fmt::Debug for Amqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Amqp").field("name", &self.config.name).field("exchange", &self.config.exchange).finish()
    }
}

impl Amqp {
    /// A publisher for `config`; it connects at its first message.
    pub fn new(config: AmqpConfig) -> Self {
        Self { config, open: Mutex::new(None) }
    }

    /// The subscription's settings.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    async fn channel(&self) -> Result<Channel, String> {
        let mut open = self.open.lock().await;
        if let Some((connection, channel)) = open.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *open = None;
        let connection = Connection::connect(&self.config.url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("cannot connect to the broker: {e}"))?;
        let channel = connection.create_channel().await.map_err(|e| format!("cannot open a channel: {e}"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("the broker refused publisher confirms: {e}"))?;
        if self.config.declare {
            channel
                .exchange_declare(
                    self.config.exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("cannot declare exchange {}: {e}", self.config.exchange))?;
        }
        *open = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Publishes `event` once and waits for the broker's confirm.
    pub async fn send(&self, event: &EventData) -> Sent {
        let started = Instant::now();
        let timeout = Duration::from_secs_f64(self.config.timeout_secs);
        let outcome = match tokio::time::timeout(timeout, self.publish(event)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("the broker did not confirm within {} s", self.config.timeout_secs)),
        };
        match outcome {
            Ok(()) => Sent { answer: Answer::Delivered, status: None, error: None, took: started.elapsed() },
            Err(error) => {
                // Whatever failed, the next attempt starts from a fresh connection.
                *self.open.lock().await = None;
                Sent {
                    answer: Answer::Failed { retry_after: None },
                    status: None,
                    error: Some(error),
                    took: started.elapsed(),
                }
            }
        }
    }

    async fn publish(&self, event: &EventData) -> Result<(), String> {
        let body = super::event_body(event)?;
        let channel = self.channel().await?;
        let routing_key = format!("{}.{}", event.entity, event.operation);
        let properties = BasicProperties::default()
            .with_message_id(event.event_id.as_str().into())
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type(format!("object.{}", event.operation).as_str().into())
            .with_timestamp((event.created_ms / 1000).max(0) as u64);
        let confirm = channel
            .basic_publish(
                self.config.exchange.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &body,
                properties,
            )
            .await
            .map_err(|e| format!("cannot publish: {e}"))?
            .await
            .map_err(|e| format!("the broker did not confirm: {e}"))?;
        if !confirm.is_ack() {
            return Err("the broker refused the message (nack)".into());
        }
        if confirm.take_message().is_some() {
            return Err(format!("no queue is bound to exchange {} for {routing_key}", self.config.exchange));
        }
        Ok(())
    }
}
