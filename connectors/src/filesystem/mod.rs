//! stub
/// stub
#[derive(Debug)]
pub struct FilesystemConnector;
impl weir_engine::Connector for FilesystemConnector { fn name(&self) -> &str { "filesystem" } }
