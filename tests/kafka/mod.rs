//! Kafka: brokers the connector tests run against, and plain rdkafka clients
//! that fill and read their topics independently of Weir's connector.

mod avro;
pub mod brokers;
mod cdc;
mod mini_batch;
mod pipeline;
mod records;
mod schema_registry;
mod upsert;
