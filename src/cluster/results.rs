//! Query results on the control plane: each `ResultBatch` carries one
//! self-contained Arrow IPC stream (schema + batch). Results are small next
//! to the data plane, so simplicity wins over saving the schema bytes.

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use super::{ClusterError, Result};

/// Encodes one batch as an IPC stream.
pub(crate) fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut writer =
        StreamWriter::try_new(&mut bytes, &batch.schema()).map_err(weir_engine::Error::from)?;
    writer.write(batch).map_err(weir_engine::Error::from)?;
    writer.finish().map_err(weir_engine::Error::from)?;
    drop(writer);
    Ok(bytes)
}

/// Decodes the batches of one IPC stream.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(bytes, None)
        .map_err(|e| ClusterError::Rejected(format!("malformed result batch: {e}")))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClusterError::Rejected(format!("malformed result batch: {e}")))
}
