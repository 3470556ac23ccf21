//! Connect streaming envelopes.
//!
//! Every message of a streaming call travels as `[flags: u8][length: u32 BE][payload]`.
//! Flag `0x01` marks a compressed payload (never used by the E2B SDKs, rejected here),
//! flag `0x02` marks the end-stream message that closes a response stream.

use thiserror::Error;

/// Flag bit of a compressed payload.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag bit of the end-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Size of the envelope header.
pub const HEADER_LEN: usize = 5;

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Raw flag byte.
    pub flags: u8,
    /// The payload (a JSON document with the JSON codec).
    pub payload: Vec<u8>,
}

impl Envelope {
    /// A plain message envelope.
    pub fn message(payload: Vec<u8>) -> Self {
        Self { flags: 0, payload }
    }

    /// An end-stream envelope.
    pub fn end_stream(payload: Vec<u8>) -> Self {
        Self {
            flags: FLAG_END_STREAM,
            payload,
        }
    }

    /// Whether this is the end-stream message.
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    /// Encodes header and payload into one buffer.
    pub fn encode(&self) -> Vec<u8> {
        encode(self.flags, &self.payload)
    }
}

/// Why a byte sequence is not a valid envelope.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The declared payload length exceeds the configured limit.
    #[error("envelope of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A flag this implementation does not understand (compression or unknown bits).
    #[error("unsupported envelope flags {0:#04x}")]
    UnsupportedFlags(u8),
    /// The input ended inside an envelope.
    #[error("truncated envelope: {have} of {need} bytes")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes needed to complete the envelope.
        need: usize,
    },
}

/// Encodes one envelope.
pub fn encode(flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("envelope payload larger than 4 GiB");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Incremental decoder: feed bytes as they arrive, take complete envelopes out.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    limit: usize,
}

impl Decoder {
    /// A decoder refusing payloads larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete envelope, `Ok(None)` if more bytes are needed.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, EnvelopeError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let flags = self.buf[0];
        if flags & !FLAG_END_STREAM != 0 {
            return Err(EnvelopeError::UnsupportedFlags(flags));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.limit {
            return Err(EnvelopeError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(Envelope { flags, payload }))
    }

    /// Call when the input has ended: fails if a partial envelope is left over.
    pub fn finish(&self) -> Result<(), EnvelopeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let need = if self.buf.len() < HEADER_LEN {
            HEADER_LEN
        } else {
            HEADER_LEN
                + u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize
        };
        Err(EnvelopeError::Truncated {
            have: self.buf.len(),
            need,
        })
    }
}

/// Decodes a complete buffer holding zero or more envelopes.
pub fn decode_all(bytes: &[u8], limit: usize) -> Result<Vec<Envelope>, EnvelopeError> {
    let mut decoder = Decoder::new(limit);
    decoder.push(bytes);
    let mut out = Vec::new();
    while let Some(env) = decoder.next_envelope()? {
        out.push(env);
    }
    decoder.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_stream_bytes_match_the_spec_example() {
        assert_eq!(
            Envelope::end_stream(b"{}".to_vec()).encode(),
            [0x02, 0, 0, 0, 2, b'{', b'}']
        );
    }

    #[test]
    fn round_trip_several_envelopes_split_anywhere() {
        let a = Envelope::message(br#"{"event":{"start":{"pid":42}}}"#.to_vec());
        let b = Envelope::end_stream(b"{}".to_vec());
        let mut wire = a.encode();
        assert_eq!(&wire[..5], &[0, 0, 0, 0, 0x1e]);
        wire.extend(b.encode());
        for split in 0..wire.len() {
            let mut d = Decoder::new(1024);
            d.push(&wire[..split]);
            let mut got = Vec::new();
            while let Some(e) = d.next_envelope().unwrap() {
                got.push(e);
            }
            d.push(&wire[split..]);
            while let Some(e) = d.next_envelope().unwrap() {
                got.push(e);
            }
            d.finish().unwrap();
            assert_eq!(got, vec![a.clone(), b.clone()]);
        }
    }

    #[test]
    fn rejects_oversized_compressed_and_truncated() {
        let big = encode(0, &[b'x'; 100]);
        assert_eq!(
            decode_all(&big, 10),
            Err(EnvelopeError::TooLarge {
                len: 100,
                limit: 10
            })
        );
        assert_eq!(
            decode_all(&encode(FLAG_COMPRESSED, b"{}"), 10),
            Err(EnvelopeError::UnsupportedFlags(1))
        );
        assert_eq!(
            decode_all(&[0, 0, 0], 10),
            Err(EnvelopeError::Truncated { have: 3, need: 5 })
        );
        assert_eq!(
            decode_all(&[0, 0, 0, 0, 4, b'{'], 10),
            Err(EnvelopeError::Truncated { have: 6, need: 9 })
        );
        assert_eq!(decode_all(&[], 10), Ok(vec![]));
    }
}
