//! A take-over's last windows: once a newer corestatsd has taken the listeners
//! (`--take-over`), the windows this process still closes go to it instead of the downstream, so
//! each context's window is written once, by the new process.
//!
//! Wraps the configured sink. While no take-over runs (`Handover::stream` empty) every batch goes
//! to it. Once one does, whole batches (sets and histograms unexpanded, `FlushBatch::whole`) are
//! sent as relay lines without their window's `|T` over the control connection, 4-byte
//! little-endian length-prefixed packets, and the new process aggregates them into its open
//! window. What is not window-aggregated (`|T` points, events, service checks, this process'
//! own telemetry) still goes to the downstream.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use super::Sink;
use super::relay::Encoder;
use crate::flushed::View;
use crate::telemetry::board::DownstreamStatus;

/// Where a take-over's windows go: set by the control thread when the new process is ready.
#[derive(Clone, Default)]
pub struct Handover {
    pub stream: Arc<Mutex<Option<UnixStream>>>,
}

/// The largest packet sent to the new process (it reads them as datagrams).
const MAX_PACKET: usize = 60 << 10;

pub struct HandoverSink {
    inner: Box<dyn Sink>,
    handover: Handover,
    enc: Encoder,
    /// Lines sent, and write errors (the window is then lost to the new process; counted).
    pub lines: u64,
    pub failed: u64,
}

impl HandoverSink {
    pub fn new(inner: Box<dyn Sink>, handover: Handover) -> Self {
        let mut enc = Encoder::new(MAX_PACKET);
        enc.untimestamped = true;
        HandoverSink {
            inner,
            handover,
            enc,
            lines: 0,
            failed: 0,
        }
    }
}

impl Sink for HandoverSink {
    fn write(&mut self, batch: View<'_>) -> io::Result<()> {
        if !batch.whole {
            return self.inner.write(batch);
        }
        let mut guard = self
            .handover
            .stream
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(stream) = guard.as_mut() else {
            drop(guard);
            return self.inner.write(batch);
        };
        let mut result = Ok(());
        let (mut lines, mut failed) = (0, 0);
        self.enc.encode(batch, &mut |packet, n| {
            if result.is_ok() {
                let len = (packet.len() as u32).to_le_bytes();
                result = stream
                    .write_all(&len)
                    .and_then(|()| stream.write_all(packet));
            }
            if result.is_ok() {
                lines += n;
            } else {
                failed += n;
            }
        });
        self.lines += lines;
        self.failed += failed;
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    fn emit_telemetry(&mut self, out: &mut crate::flushed::FlushBatch, window: u64) {
        self.inner.emit_telemetry(out, window);
    }

    fn status(&self, s: &mut DownstreamStatus) {
        self.inner.status(s);
    }

    fn close(&mut self) -> io::Result<u64> {
        if self.lines > 0 || self.failed > 0 {
            eprintln!(
                "corestatsd: take-over: {} lines of the last windows sent to the new process, \
                 {} lost to write errors",
                self.lines, self.failed
            );
        }
        // Closing the connection tells the new process everything has been sent.
        *self
            .handover
            .stream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        Ok(self.failed + self.inner.close()?)
    }
}
