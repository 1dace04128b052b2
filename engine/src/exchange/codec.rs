//! Framing of a channel's messages as Flight `FlightData`, both ways.
//!
//! * Record batches are Arrow IPC: a schema message before the first batch
//!   (and again when the schema changes), dictionary batches as IPC requires,
//!   then the record batch message (`data_header` + `data_body`).
//! * Every other message is a frame without IPC content whose `app_metadata`
//!   holds a `weir_proto::StreamMessage`.
//!
//! Credit is counted in *IPC bytes* (`data_header` + `data_body`) of all the
//! frames a batch took, the same way on both sides, so the receiver can hand
//! back exactly what the sender spent.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::convert::fb_to_schema;
use arrow::ipc::reader::{read_dictionary, read_record_batch};
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow::ipc::{MessageHeader, root_as_message};
use arrow::record_batch::RecordBatch;
use arrow_flight::FlightData;
use bytes::Bytes;
use prost::Message as _;
use weir_proto::stream_message::Kind;
use weir_proto::{ChannelId, CreditGrant, StreamMessage};

use super::ChannelKey;
use crate::error::Result;
use crate::message::{CheckpointBarrier, Message, Watermark};

/// IPC bytes of a frame: what credit is counted in.
pub(crate) fn ipc_size(frame: &FlightData) -> u64 {
    (frame.data_header.len() + frame.data_body.len()) as u64
}

/// A frame carrying only a control message in `app_metadata`.
fn control_frame(kind: Kind) -> FlightData {
    FlightData {
        app_metadata: Bytes::from(StreamMessage { kind: Some(kind) }.encode_to_vec()),
        ..Default::default()
    }
}

/// The first frame of a stream: which channel it carries.
pub(crate) fn open_frame(channel: &ChannelKey) -> FlightData {
    control_frame(Kind::Open(ChannelId {
        job_id: channel.job_id.clone(),
        edge: channel.edge,
        from_subtask: channel.from_subtask,
        to_subtask: channel.to_subtask,
    }))
}

/// The frame of a non-batch message; `None` for a batch.
pub(crate) fn message_frame(message: &Message) -> Option<FlightData> {
    let kind = match message {
        Message::Data(_) => return None,
        Message::Watermark(watermark) => Kind::WatermarkMs(watermark.millis()),
        Message::Barrier(barrier) => Kind::Barrier(weir_proto::CheckpointBarrier {
            checkpoint_id: barrier.id,
            timestamp_ms: barrier.timestamp_ms,
            then_stop: barrier.then_stop,
        }),
        Message::EndOfStream => Kind::EndOfStream(weir_proto::EndOfStream {}),
    };
    Some(control_frame(kind))
}

/// A receiver's grant of `bytes` more credit.
pub(crate) fn grant_frame(bytes: u64) -> FlightData {
    FlightData {
        app_metadata: Bytes::from(CreditGrant { bytes }.encode_to_vec()),
        ..Default::default()
    }
}

/// Reads a grant frame sent by a receiver.
pub(crate) fn decode_grant(frame: &FlightData) -> Result<u64, String> {
    CreditGrant::decode(frame.app_metadata.as_ref())
        .map(|grant| grant.bytes)
        .map_err(|e| format!("bad credit grant: {e}"))
}

/// Reads the first frame of a stream, which must name its channel.
pub(crate) fn decode_open(frame: &FlightData) -> Option<ChannelKey> {
    if !frame.data_header.is_empty() {
        return None;
    }
    match StreamMessage::decode(frame.app_metadata.as_ref())
        .ok()?
        .kind?
    {
        Kind::Open(id) => Some(ChannelKey {
            job_id: id.job_id,
            edge: id.edge,
            from_subtask: id.from_subtask,
            to_subtask: id.to_subtask,
        }),
        _ => None,
    }
}

/// Encodes one stream's batches, keeping the IPC state (schema sent,
/// dictionaries sent) between them.
pub(crate) struct BatchEncoder {
    generator: IpcDataGenerator,
    options: IpcWriteOptions,
    context: IpcWriteContext,
    dictionaries: DictionaryTracker,
    schema: Option<SchemaRef>,
}

/// A batch as frames, and the credit it costs.
pub(crate) struct EncodedBatch {
    pub frames: Vec<FlightData>,
    pub bytes: u64,
}

impl BatchEncoder {
    pub(crate) fn new() -> Self {
        Self {
            generator: IpcDataGenerator::default(),
            options: IpcWriteOptions::default(),
            context: IpcWriteContext::default(),
            dictionaries: DictionaryTracker::new(false),
            schema: None,
        }
    }

    /// The frames of `batch`: the schema when it is new, the dictionaries
    /// that changed, and the batch itself.
    pub(crate) fn encode(&mut self, batch: &RecordBatch) -> Result<EncodedBatch> {
        let mut frames = Vec::with_capacity(2);
        let schema = batch.schema();
        let same = self
            .schema
            .as_ref()
            .is_some_and(|sent| Arc::ptr_eq(sent, &schema) || **sent == *schema);
        if !same {
            // A new schema starts the IPC stream over: dictionary ids are
            // assigned again and every dictionary is resent.
            self.dictionaries = DictionaryTracker::new(false);
            let encoded = self.generator.schema_to_bytes_with_dictionary_tracker(
                &schema,
                &mut self.dictionaries,
                &self.options,
            );
            frames.push(FlightData::from(encoded));
            self.schema = Some(schema);
        }
        let (dictionaries, encoded) = self.generator.encode(
            batch,
            &mut self.dictionaries,
            &self.options,
            &mut self.context,
        )?;
        frames.extend(dictionaries.into_iter().map(FlightData::from));
        frames.push(FlightData::from(encoded));
        let bytes = frames.iter().map(ipc_size).sum();
        Ok(EncodedBatch { frames, bytes })
    }
}

/// A message decoded by [`FrameDecoder`], with the credit to grant back
/// once it has been handed on.
pub(crate) struct Decoded {
    pub message: Message,
    pub bytes: u64,
}

/// Decodes one stream's frames back into messages.
#[derive(Default)]
pub(crate) struct FrameDecoder {
    schema: Option<SchemaRef>,
    dictionaries: HashMap<i64, ArrayRef>,
    /// IPC bytes of schema and dictionary frames not yet granted back: they
    /// are granted with the batch they belong to.
    pending_bytes: u64,
}

impl FrameDecoder {
    /// Decodes one frame; `Ok(None)` when it only updated the IPC state
    /// (schema, dictionary). The error says what is malformed.
    pub(crate) fn decode(&mut self, frame: FlightData) -> Result<Option<Decoded>, String> {
        if frame.data_header.is_empty() {
            if !frame.data_body.is_empty() {
                return Err("frame has a body but no IPC header".into());
            }
            return decode_control(&frame.app_metadata)
                .map(|message| Some(Decoded { message, bytes: 0 }));
        }
        let bytes = ipc_size(&frame);
        // The IPC reader trusts offsets it has verified only in part; a
        // hostile frame must fail this stream, not the process.
        let decoded = catch_unwind(AssertUnwindSafe(|| self.decode_ipc(frame)))
            .unwrap_or_else(|_| Err("IPC message could not be decoded".into()))?;
        self.pending_bytes = self.pending_bytes.saturating_add(bytes);
        Ok(decoded.map(|batch| Decoded {
            message: Message::Data(batch),
            bytes: std::mem::take(&mut self.pending_bytes),
        }))
    }

    fn decode_ipc(&mut self, frame: FlightData) -> Result<Option<RecordBatch>, String> {
        let message = root_as_message(&frame.data_header)
            .map_err(|e| format!("bad IPC message header: {e}"))?;
        let body_len = usize::try_from(message.bodyLength()).unwrap_or(usize::MAX);
        if body_len > frame.data_body.len() {
            return Err(format!(
                "IPC body is {} bytes, its header says {body_len}",
                frame.data_body.len()
            ));
        }
        let version = message.version();
        match message.header_type() {
            MessageHeader::Schema => {
                let schema = message
                    .header_as_schema()
                    .ok_or("IPC schema message without a schema")?;
                self.schema = Some(Arc::new(fb_to_schema(schema)));
                self.dictionaries.clear();
                Ok(None)
            }
            MessageHeader::DictionaryBatch => {
                let schema = self
                    .schema
                    .as_ref()
                    .ok_or("IPC dictionary before the schema")?;
                let dictionary = message
                    .header_as_dictionary_batch()
                    .ok_or("IPC dictionary message without a dictionary")?;
                let data = dictionary
                    .data()
                    .ok_or("IPC dictionary message without data")?;
                check_buffers(data, body_len)?;
                let body = Buffer::from(frame.data_body);
                read_dictionary(&body, dictionary, schema, &mut self.dictionaries, &version)
                    .map_err(|e| format!("bad IPC dictionary: {e}"))?;
                Ok(None)
            }
            MessageHeader::RecordBatch => {
                let schema = self
                    .schema
                    .as_ref()
                    .ok_or("IPC record batch before the schema")?;
                let batch = message
                    .header_as_record_batch()
                    .ok_or("IPC record batch message without a batch")?;
                check_buffers(batch, body_len)?;
                let body = Buffer::from(frame.data_body);
                read_record_batch(
                    &body,
                    batch,
                    Arc::clone(schema),
                    &self.dictionaries,
                    None,
                    &version,
                )
                .map(Some)
                .map_err(|e| format!("bad IPC record batch: {e}"))
            }
            other => Err(format!(
                "unexpected IPC message {}",
                other.variant_name().unwrap_or("(unknown)")
            )),
        }
    }
}

/// Checks that every buffer an IPC batch names lies inside its body (the
/// reader would index out of bounds otherwise).
fn check_buffers(batch: arrow::ipc::RecordBatch<'_>, body_len: usize) -> Result<(), String> {
    let buffers = batch.buffers().ok_or("IPC batch without buffers")?;
    for buffer in buffers.iter() {
        let start = u64::try_from(buffer.offset()).map_err(|_| "negative IPC buffer offset")?;
        let len = u64::try_from(buffer.length()).map_err(|_| "negative IPC buffer length")?;
        if start.saturating_add(len) > body_len as u64 {
            return Err(format!(
                "IPC buffer at {start}+{len} lies outside the {body_len}-byte body"
            ));
        }
    }
    Ok(())
}

/// Decodes a control message from `app_metadata`.
fn decode_control(metadata: &[u8]) -> Result<Message, String> {
    let message =
        StreamMessage::decode(metadata).map_err(|e| format!("bad stream message: {e}"))?;
    match message.kind {
        Some(Kind::WatermarkMs(ms)) => Ok(Message::Watermark(Watermark(ms))),
        Some(Kind::Barrier(barrier)) => Ok(Message::Barrier(CheckpointBarrier {
            id: barrier.checkpoint_id,
            timestamp_ms: barrier.timestamp_ms,
            then_stop: barrier.then_stop,
        })),
        Some(Kind::EndOfStream(_)) => Ok(Message::EndOfStream),
        Some(Kind::Open(_)) => Err("second open message on an open stream".into()),
        None => Err("frame carries neither IPC data nor a stream message".into()),
    }
}
