//! Sockets, the per-shard buffer pool and batched receive, for every transport.
//!
//! Owns socket creation (SO_REUSEPORT, SO_RCVBUF, unix socket files and their mode, SO_PASSCRED)
//! and the raw receive path: `recvmmsg` with `MSG_DONTWAIT` into a preallocated pool while a
//! datagram socket holds data, glommio only to wait for readiness when it is empty (its
//! per-datagram `recv_from` is slow, glommio #672); stream framing for unix stream and TCP
//! connections; the pid-to-container lookup of origin detection. Hands `&[u8]` packets (and the
//! sender's container) to its caller and knows nothing of their content.

pub mod capture;
mod containers;
mod datagram;
mod forward;
mod stream;
mod tcp;
mod udp;
mod uds;

pub use containers::{ContainerCache, Lookup, Unresolved};
pub mod activation;
pub use datagram::{DatagramReceiver, Readiness, Received};
pub use forward::Forwarder;
pub use stream::{FrameError, Framer};
pub use tcp::bind_tcp_shards;
pub use udp::bind_udp_shards;
pub use uds::{bind_uds_datagram, bind_uds_stream, peer_pid};

crate::label::labels! {
    /// The transports corestatsd listens on; the index of per-transport telemetry.
    pub enum Transport: "transport" {
        Udp => "udp",
        /// Unix datagram socket.
        Uds => "uds",
        UdsStream => "uds_stream",
        Tcp => "tcp",
    }
}

crate::label::labels! {
    /// The stream transports: their connections are counted per transport.
    pub enum Stream: "transport" {
        UdsStream => "uds_stream",
        Tcp => "tcp",
    }
}

impl Stream {
    pub fn transport(self) -> Transport {
        match self {
            Stream::UdsStream => Transport::UdsStream,
            Stream::Tcp => Transport::Tcp,
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

crate::label::labels! {
    /// Why a stream connection ended.
    pub enum CloseReason: "reason" {
        /// The client closed between packets.
        Eof => "eof",
        /// A frame or line longer than `--buffer-size-bytes`.
        TooLong => "too_long",
        /// The client closed inside a length-prefixed frame (its bytes are lost).
        PartialFrame => "partial_frame",
        /// A length-framed connection opened with text: a newline client (logged, naming
        /// `--tcp-framing`).
        TextOnLengthFraming => "text_on_length_framing",
        /// Nothing received for `--tcp-idle-timeout-secs` (`--uds-stream-idle-timeout-secs`).
        IdleTimeout => "idle_timeout",
        /// Holding part of a frame, none completed, for `--stream-frame-timeout-secs` (a
        /// slowloris client); the part is dropped.
        FrameTimeout => "frame_timeout",
        /// The shard was at `--max-connections-per-shard` for its transport and a new client
        /// came: the longest-idle connection made room (after reading what it had sent).
        Evicted => "evicted",
        /// A socket error (reset by peer, ...).
        ReadError => "read_error",
        /// Over `--max-connections-per-shard` with no connection to evict: closed as soon as
        /// accepted.
        Refused => "refused",
        /// corestatsd stopped (after reading what the client had sent).
        Stopped => "stopped",
    }
}

impl From<FrameError> for CloseReason {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLong => CloseReason::TooLong,
            FrameError::PartialFrame => CloseReason::PartialFrame,
            FrameError::TextOnLengthFraming => CloseReason::TextOnLengthFraming,
        }
    }
}
