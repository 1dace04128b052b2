//! stub
/// stub
#[derive(Debug)]
pub struct PrintConnector;
impl weir_engine::Connector for PrintConnector { fn name(&self) -> &str { "print" } }
