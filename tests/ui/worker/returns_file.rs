// A file (or socket, or pipe) cannot be serialized; the hint is `mp::Handle`, which travels as a
// descriptor, not deriving serde on `File`.
#[mp::worker]
fn open(path: String) -> std::fs::File {
    std::fs::File::open(path).unwrap()
}

#[mp::worker]
fn listen(socket: std::net::TcpListener) -> u16 {
    socket.local_addr().unwrap().port()
}

fn main() {}
