//! Sockets, the per-shard buffer pool and batched receive, for every transport.
//!
//! Owns socket creation (SO_REUSEPORT, SO_RCVBUF, unix socket files and their mode, SO_PASSCRED)
//! and the raw receive path: `recvmmsg` with `MSG_DONTWAIT` into a preallocated pool while a
//! datagram socket holds data, glommio only to wait for readiness when it is empty (its
//! per-datagram `recv_from` is slow, glommio #672); stream framing for unix stream and TCP
//! connections; the pid-to-container lookup of origin detection. Hands `&[u8]` packets (and the
//! sender's container) to its caller and knows nothing of their content.

mod credentials;
mod datagram;
mod forward;
mod stream;
mod tcp;
mod udp;
mod uds;

pub use credentials::{ContainerCache, Lookup, container_id_from_cgroup};
pub use datagram::{DatagramReceiver, Readiness, Received};
pub use forward::{Forwarded, Forwarder};
pub use stream::{FrameError, Framer};
pub use tcp::{BoundTcp, bind_tcp_shards};
pub use udp::{BoundUdp, bind_udp_shards};
pub use uds::{bind_uds_datagram, bind_uds_stream, peer_pid};

/// The transports corestatsd listens on; the index of per-transport telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// Unix datagram socket.
    Uds,
    UdsStream,
    Tcp,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Udp,
        Transport::Uds,
        Transport::UdsStream,
        Transport::Tcp,
    ];

    /// The name in flags (`--eol-required`) and telemetry tags (`transport:uds`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Uds => "uds",
            Transport::UdsStream => "uds_stream",
            Transport::Tcp => "tcp",
        }
    }
}

/// How a stream connection delimits packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A 4-byte little-endian length, then that many bytes of packet.
    Length,
    /// Lines ending with `\n`.
    Newline,
}

/// Why a stream connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed between packets.
    Eof,
    /// A frame or line longer than `--buffer-size-bytes`.
    TooLong,
    /// The client closed inside a length-prefixed frame (its bytes are lost).
    PartialFrame,
    /// Nothing received for `--tcp-idle-timeout-secs`.
    IdleTimeout,
    /// A socket error (reset by peer, ...).
    ReadError,
    /// Over `--max-connections-per-shard`: closed as soon as accepted.
    Refused,
    /// corestatsd stopped (after reading what the client had sent).
    Stopped,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        CloseReason::Eof,
        CloseReason::TooLong,
        CloseReason::PartialFrame,
        CloseReason::IdleTimeout,
        CloseReason::ReadError,
        CloseReason::Refused,
        CloseReason::Stopped,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            CloseReason::Eof => "eof",
            CloseReason::TooLong => "too_long",
            CloseReason::PartialFrame => "partial_frame",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::ReadError => "read_error",
            CloseReason::Refused => "refused",
            CloseReason::Stopped => "stopped",
        }
    }

    /// Closes that lost data or refused a client (the window log line sums these).
    pub fn is_error(self) -> bool {
        matches!(
            self,
            CloseReason::TooLong
                | CloseReason::PartialFrame
                | CloseReason::ReadError
                | CloseReason::Refused
        )
    }
}

impl From<FrameError> for CloseReason {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLong => CloseReason::TooLong,
            FrameError::PartialFrame => CloseReason::PartialFrame,
        }
    }
}
