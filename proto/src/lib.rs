//! `weir-proto`: Weir's wire protocol.
//!
//! Generated from `proto/weir.proto` at build time (protox, so no system
//! `protoc` is needed):
//! * the data plane's framing: [`StreamMessage`] (watermarks, barriers,
//!   end of stream, and the channel a stream carries) travels in Arrow
//!   Flight's `app_metadata` beside IPC record batches; receivers answer
//!   with [`CreditGrant`]s;
//! * the control plane: the [`Coordinator`](coordinator_server::Coordinator)
//!   service that workers keep a session with and clients submit jobs to.

#![allow(clippy::all, clippy::clone_on_ref_ptr, missing_docs)]

tonic::include_proto!("weir.v1");

/// The protobuf source of the `weir.v1` package.
pub const WEIR_PROTO: &str = include_str!("../proto/weir.proto");

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn stream_messages_round_trip() {
        let message = StreamMessage {
            kind: Some(stream_message::Kind::Barrier(CheckpointBarrier {
                checkpoint_id: 7,
                timestamp_ms: 1_000,
                then_stop: false,
            })),
        };
        let bytes = message.encode_to_vec();
        assert_eq!(StreamMessage::decode(bytes.as_slice()).unwrap(), message);
    }
}
