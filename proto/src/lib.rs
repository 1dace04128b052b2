//! `weir-proto`: Weir's wire protocol.
//!
//! [`WEIR_PROTO`] is the protobuf definition of what crosses process
//! boundaries: the [`Message`](../weir_engine/message/enum.Message.html)
//! envelope of a dataflow edge (Arrow IPC batches, watermarks, checkpoint
//! barriers, end of stream) and task identities. The single-process engine
//! does not serialise anything yet; the distributed runtime generates its
//! tonic/prost code from this file (built without a system `protoc`).

/// The protobuf source of the `weir.v1` package.
pub const WEIR_PROTO: &str = include_str!("../proto/weir.proto");

#[cfg(test)]
mod tests {
    use super::WEIR_PROTO;

    #[test]
    fn declares_the_stream_envelope() {
        assert!(WEIR_PROTO.contains("package weir.v1;"));
        for message in [
            "StreamMessage",
            "CheckpointBarrier",
            "EndOfStream",
            "TaskId",
        ] {
            assert!(
                WEIR_PROTO.contains(&format!("message {message} ")),
                "{message} missing"
            );
        }
    }
}
