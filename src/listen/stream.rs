//! Stream framing for unix stream and TCP connections: a fixed per-connection buffer of
//! 2 x (packet limit + 4) bytes, read into at its end, from which complete packets are cut:
//! 4-byte little-endian length-prefixed frames, or runs of complete `\n`-terminated lines.
//! A connection can hold no more than that buffer, whatever its client does.

use std::ops::Range;

use super::Framing;

/// Why a connection is closed for what it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A frame (or a line, with newline framing) longer than the packet limit.
    TooLong,
    /// The client closed in the middle of a length-prefixed frame.
    PartialFrame,
    /// A length-framed connection's first four bytes were text: a newline client.
    TextOnLengthFraming,
}

pub struct Framer {
    framing: Framing,
    max_packet: usize,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// A packet has been cut already.
    cut_any: bool,
}

/// Whether a length header is statsd text instead (printable ASCII: `name`, `_e{`, ...). Four
/// such bytes make a length over 500 MB, far past any packet limit.
fn looks_like_text(header: &[u8; 4]) -> bool {
    header.iter().all(|&b| (0x20..0x7F).contains(&b))
}

impl Framer {
    pub fn new(framing: Framing, max_packet: usize) -> Framer {
        Framer {
            framing,
            max_packet,
            buf: vec![0u8; 2 * (max_packet + 4)].into_boxed_slice(),
            start: 0,
            end: 0,
            cut_any: false,
        }
    }

    /// Free space to read into, after moving unconsumed bytes to the front. Never empty:
    /// `packets` fails before the buffer can fill without a complete packet in it.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records `n` bytes read into `spare()`.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Cuts the complete packets now buffered, appending their ranges to `out` (valid until
    /// the next `spare`).
    pub fn packets(&mut self, out: &mut Vec<Range<usize>>) -> Result<(), FrameError> {
        match self.framing {
            Framing::Length => loop {
                let pending = &self.buf[self.start..self.end];
                let Some(header) = pending.first_chunk::<4>() else {
                    return Ok(());
                };
                let len = u32::from_le_bytes(*header) as usize;
                if len > self.max_packet {
                    if !self.cut_any && looks_like_text(header) {
                        return Err(FrameError::TextOnLengthFraming);
                    }
                    return Err(FrameError::TooLong);
                }
                if pending.len() < 4 + len {
                    return Ok(());
                }
                out.push(self.start + 4..self.start + 4 + len);
                self.start += 4 + len;
                self.cut_any = true;
            },
            Framing::Newline => {
                let pending = &self.buf[self.start..self.end];
                match memchr::memrchr(b'\n', pending) {
                    Some(last) => {
                        // Every line in it was complete within the limit, or the buffer
                        // (2 x limit) would have been refused below before it filled.
                        out.push(self.start..self.start + last + 1);
                        self.start += last + 1;
                        if self.end - self.start > self.max_packet {
                            return Err(FrameError::TooLong);
                        }
                        Ok(())
                    }
                    None if pending.len() > self.max_packet => Err(FrameError::TooLong),
                    None => Ok(()),
                }
            }
        }
    }

    /// At end of stream: the bytes left. With newline framing they are a last line without
    /// `\n` (a packet); in a length-prefixed frame they are an incomplete frame.
    pub fn finish(&mut self) -> Result<Option<Range<usize>>, FrameError> {
        if self.start == self.end {
            return Ok(None);
        }
        let rest = self.start..self.end;
        self.start = self.end;
        match self.framing {
            Framing::Newline => Ok(Some(rest)),
            Framing::Length => Err(FrameError::PartialFrame),
        }
    }

    /// Bytes are buffered that do not make a complete packet yet.
    pub fn holds_partial(&self) -> bool {
        self.start != self.end
    }

    pub fn get(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and collects the packets and the error.
    fn run(
        framing: Framing,
        max: usize,
        input: &[u8],
        step: usize,
    ) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut f = Framer::new(framing, max);
        let mut got = Vec::new();
        let mut ranges = Vec::new();
        for piece in input.chunks(step) {
            let spare = f.spare();
            assert!(
                spare.len() >= piece.len(),
                "spare {} < {}",
                spare.len(),
                piece.len()
            );
            spare[..piece.len()].copy_from_slice(piece);
            f.filled(piece.len());
            ranges.clear();
            let r = f.packets(&mut ranges);
            got.extend(ranges.iter().map(|r| f.get(r.clone()).to_vec()));
            if let Err(e) = r {
                return (got, Some(e));
            }
        }
        match f.finish() {
            Ok(Some(r)) => got.push(f.get(r).to_vec()),
            Ok(None) => {}
            Err(e) => return (got, Some(e)),
        }
        (got, None)
    }

    fn frame(p: &[u8]) -> Vec<u8> {
        let mut v = (p.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(p);
        v
    }

    #[test]
    fn length_frames_survive_any_split() {
        let packets: [&[u8]; 4] = [b"a:1|c", b"b:2|g\nc:3|c", b"", b"d:4|d\n"];
        let input: Vec<u8> = packets.iter().flat_map(|p| frame(p)).collect();
        for step in [1, 2, 3, 5, 7, 64] {
            let (got, err) = run(Framing::Length, 16, &input, step);
            assert_eq!(err, None, "step {step}");
            let want: Vec<Vec<u8>> = packets.iter().map(|p| p.to_vec()).collect();
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn a_frame_over_the_limit_or_cut_by_eof_is_an_error() {
        let mut input = frame(b"ok:1|c");
        input.extend(frame(&[b'x'; 17]));
        let (got, err) = run(Framing::Length, 16, &input, 4);
        assert_eq!(
            (got, err),
            (vec![b"ok:1|c".to_vec()], Some(FrameError::TooLong))
        );
        let mut input = frame(b"ok:1|c");
        input.extend(&frame(b"cut:1|c")[..6]);
        let (got, err) = run(Framing::Length, 16, &input, 100);
        assert_eq!(
            (got, err),
            (vec![b"ok:1|c".to_vec()], Some(FrameError::PartialFrame))
        );
    }

    #[test]
    fn text_where_the_first_length_was_due_is_told_apart_from_a_long_frame() {
        let (got, err) = run(Framing::Length, 16, b"pystatsd.hits:1|c\n", 100);
        assert_eq!((got.len(), err), (0, Some(FrameError::TextOnLengthFraming)));
        // Binary garbage first is only too long; text after a good frame is a broken stream.
        let (_, err) = run(Framing::Length, 16, &[0xff, 0xff, 0xff, 0x7f], 100);
        assert_eq!(err, Some(FrameError::TooLong));
        let mut input = frame(b"ok:1|c");
        input.extend(b"late:1|c");
        let (got, err) = run(Framing::Length, 16, &input, 100);
        assert_eq!(
            (got, err),
            (vec![b"ok:1|c".to_vec()], Some(FrameError::TooLong))
        );
    }

    #[test]
    fn newline_framing_cuts_at_the_last_newline_and_keeps_the_tail_at_eof() {
        let input = b"a:1|c\nb:2|c\nc:3|c";
        let (got, err) = run(Framing::Newline, 16, input, 4);
        assert_eq!(err, None);
        assert_eq!(got.concat(), input.to_vec());
        assert_eq!(
            got.last().unwrap(),
            b"c:3|c",
            "the unterminated tail comes last, alone"
        );
        assert!(got[..got.len() - 1].iter().all(|p| p.ends_with(b"\n")));
    }

    #[test]
    fn a_line_over_the_limit_is_an_error() {
        let mut input = b"ok:1|c\n".to_vec();
        input.extend([b'x'; 40]);
        input.push(b'\n');
        let (got, err) = run(Framing::Newline, 16, &input, 8);
        assert_eq!(got, vec![b"ok:1|c\n".to_vec()]);
        assert_eq!(err, Some(FrameError::TooLong));
    }
}
