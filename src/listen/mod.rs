//! Sockets, the per-shard buffer pool and batched receive.
//!
//! Owns socket creation (SO_REUSEPORT, SO_RCVBUF) and the raw receive path: `recvmmsg` with
//! `MSG_DONTWAIT` into a preallocated pool while the socket holds data; glommio is used only to
//! wait for readiness when it is empty (its per-datagram `recv_from` is slow, glommio #672).
//! Hands `&[u8]` datagrams to its caller and knows nothing of their content.

mod forward;
mod udp;

pub use forward::{Forwarded, Forwarder};

pub use udp::{BoundUdp, Received, UdpReceiver, bind_udp_shards, glommio_socket};
