//! stub
/// stub
#[derive(Debug)]
pub struct BlackholeConnector;
impl weir_engine::Connector for BlackholeConnector { fn name(&self) -> &str { "blackhole" } }
