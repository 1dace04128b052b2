//! Kafka: brokers the connector tests run against, and plain rdkafka clients
//! that fill and read their topics independently of Weir's connector.

pub mod brokers;
mod pipeline;
mod records;
