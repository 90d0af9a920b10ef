//! Framing SIP messages out of a byte stream (TCP, TLS): Content-Length framing (§18.3),
//! CRLF keep-alives (RFC 5626 §3.5.1), and a bounded buffer.

use super::lex::parse_decimal;
use super::parse::find_head_end;

/// What the framer cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message: head, blank line and exactly Content-Length bytes of body.
    Message(Vec<u8>),
    /// A double CRLF ping: answer it with a single CRLF pong.
    KeepAlivePing,
    /// A single CRLF pong.
    KeepAlivePong,
}

/// A stream that cannot be framed any more; the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// No end of headers within the size limit.
    HeadTooLarge,
    /// A message on a stream must carry Content-Length (§18.3, §20.14).
    MissingContentLength,
    /// Content-Length is not a number, or several disagree.
    BadContentLength,
    /// Content-Length says the message is larger than the limit.
    MessageTooLarge,
}

/// Cuts frames from a byte stream, holding at most about `max_message_size` bytes.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    buf: Vec<u8>,
    max_message_size: usize,
    failed: Option<FramingError>,
}

impl StreamFramer {
    pub fn new(max_message_size: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_message_size,
            failed: None,
        }
    }

    /// Appends bytes read from the connection. Call `next_frame` until it returns `None`
    /// after each push; a framer that failed ignores further bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The next complete frame, `None` if more bytes are needed, or the error that poisons
    /// the stream (returned again on every later call).
    pub fn next_frame(&mut self) -> Option<Result<Frame, FramingError>> {
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        match self.cut() {
            Ok(frame) => frame.map(Ok),
            Err(e) => {
                // The bytes stay readable (bounded by the limit) so that the caller can
                // answer the request that broke the stream before closing it.
                self.failed = Some(e);
                Some(Err(e))
            }
        }
    }

    fn cut(&mut self) -> Result<Option<Frame>, FramingError> {
        // Between messages: keep-alives, and stray line ends that §7.5 says to ignore.
        loop {
            let b = &self.buf;
            if b.starts_with(b"\r\n\r\n") {
                self.buf.drain(..4);
                return Ok(Some(Frame::KeepAlivePing));
            }
            if b"\r\n\r\n".starts_with(b) && !b.is_empty() {
                return Ok(None); // could still become a ping
            }
            if b.starts_with(b"\r\n") {
                self.buf.drain(..2);
                return Ok(Some(Frame::KeepAlivePong));
            }
            match b.first() {
                Some(b'\r' | b'\n') => {
                    self.buf.drain(..1);
                }
                Some(_) => break,
                None => return Ok(None),
            }
        }
        let Some((head_len, body_start)) = find_head_end(&self.buf) else {
            if self.buf.len() > self.max_message_size {
                return Err(FramingError::HeadTooLarge);
            }
            return Ok(None);
        };
        if body_start > self.max_message_size {
            return Err(FramingError::HeadTooLarge);
        }
        let length = content_length(&self.buf[..head_len])?;
        let total = body_start
            .checked_add(length)
            .ok_or(FramingError::MessageTooLarge)?;
        if total > self.max_message_size {
            return Err(FramingError::MessageTooLarge);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let frame = std::mem::replace(&mut self.buf, rest);
        Ok(Some(Frame::Message(frame)))
    }
}

/// Content-Length from a raw header section (long or compact name, any case).
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<u64> = None;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"Content-Length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = std::str::from_utf8(line[colon + 1..].trim_ascii())
            .map_err(|_| FramingError::BadContentLength)?;
        let v = parse_decimal(value, u32::MAX as u64).ok_or(FramingError::BadContentLength)?;
        if found.is_some_and(|f| f != v) {
            return Err(FramingError::BadContentLength);
        }
        found = Some(v);
    }
    found
        .map(|v| v as usize)
        .ok_or(FramingError::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc";

    fn frames(chunks: &[&[u8]]) -> Vec<Result<Frame, FramingError>> {
        let mut f = StreamFramer::new(1000);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(fr) = f.next_frame() {
                let stop = fr.is_err();
                out.push(fr);
                if stop {
                    return out;
                }
            }
        }
        out
    }

    #[test]
    fn keepalives_and_messages_in_any_chunking() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(MSG);
        let whole = frames(&[&stream]);
        assert_eq!(
            whole,
            vec![
                Ok(Frame::KeepAlivePing),
                Ok(Frame::Message(MSG.to_vec())),
                Ok(Frame::KeepAlivePong),
                Ok(Frame::Message(MSG.to_vec())),
            ]
        );
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frames(&bytes), whole);
    }

    #[test]
    fn errors_poison_the_stream() {
        assert_eq!(
            frames(&[b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"]),
            vec![Err(FramingError::MissingContentLength)]
        );
        assert_eq!(
            frames(&[b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n"]),
            vec![Err(FramingError::MessageTooLarge)]
        );
        assert_eq!(
            frames(&[&[b'x'; 1500]]),
            vec![Err(FramingError::HeadTooLarge)]
        );
    }
}
