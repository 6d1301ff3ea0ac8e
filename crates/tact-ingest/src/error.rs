use rdkafka::error::KafkaError;
use tact_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("topic {topic}: {why}")]
    Topic { topic: String, why: String },
    #[error("{0}")]
    Input(String),
    #[error("stopped")]
    Stopped,
}
