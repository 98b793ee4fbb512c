//! Prints the sizes of the per-connection structures (`cargo run -p dfw-engine --example sizes`).
fn main() {
    use std::mem::size_of;
    println!("FlowKey {}", size_of::<engine::flow::FlowKey>());
    println!("TcpState {}", size_of::<engine::tcp::TcpState>());
    println!("ProtoState {}", size_of::<engine::conntrack::ProtoState>());
    println!("Conn {}", size_of::<engine::conntrack::Conn>());
    println!("Option<Entry<Conn>> {}", size_of::<Option<engine::table::Entry<engine::conntrack::Conn>>>());
}
