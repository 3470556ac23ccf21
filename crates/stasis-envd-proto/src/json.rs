//! Serde helpers for proto3 canonical JSON.
//!
//! * `bytes` are standard base64 with padding; parsing also accepts URL-safe and
//!   unpadded input, as protojson does.
//! * 64-bit integers are written as decimal strings; parsing accepts strings or numbers.
//! * 32-bit integers are written as numbers; parsing accepts numbers or strings.

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;
use std::fmt;

/// `#[serde(with = "b64")]` for `Vec<u8>` fields.
pub mod b64 {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;

    /// Serializes bytes as padded standard base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Parses base64 in any of the four common alphabets/padding variants.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: std::borrow::Cow<'de, str> = serde::Deserialize::deserialize(d)?;
        decode(&s).map_err(de::Error::custom)
    }

    /// Decodes base64 leniently.
    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        let padded = s.ends_with('=');
        let url = s.contains('-') || s.contains('_');
        let engine = match (url, padded) {
            (false, true) => &STANDARD,
            (false, false) => &STANDARD_NO_PAD,
            (true, true) => &URL_SAFE,
            (true, false) => &URL_SAFE_NO_PAD,
        };
        engine
            .decode(s)
            .map_err(|e| format!("invalid base64 bytes: {e}"))
    }
}

/// `#[serde(with = "int64")]` for `i64` fields (written as a string).
pub mod int64 {
    use super::*;

    /// Writes the number as a decimal string.
    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Reads a number or a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(IntVisitor::<i64>::new())
    }
}

/// `#[serde(deserialize_with = "u32_lenient")]`: a number or a decimal string.
pub fn u32_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    d.deserialize_any(IntVisitor::<u32>::new())
}

/// Like [`u32_lenient`] for optional fields.
pub fn opt_u32_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    d.deserialize_any(IntVisitor::<u32>::new()).map(Some)
}

/// `skip_serializing_if` helper for numeric zero values.
pub fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `skip_serializing_if` helper for `false`.
pub fn is_false(v: &bool) -> bool {
    !*v
}

struct IntVisitor<T>(std::marker::PhantomData<T>);

impl<T> IntVisitor<T> {
    fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<'de, T> Visitor<'de> for IntVisitor<T>
where
    T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an integer ({}) as a number or a string",
            std::any::type_name::<T>()
        )
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("integer {v} out of range")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("integer {v} out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            self.visit_i64(v as i64)
        } else {
            Err(E::custom(format!("{v} is not an integer")))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.trim()
            .parse::<T>()
            .map_err(|_| E::custom(format!("invalid integer string {v:?}")))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(with = "super::b64")]
        b: Vec<u8>,
        #[serde(with = "super::int64")]
        n: i64,
        #[serde(deserialize_with = "super::u32_lenient")]
        u: u32,
    }

    #[test]
    fn lenient_parsing_and_canonical_output() {
        let t: T = serde_json::from_str(r#"{"b":"aGkK","n":12,"u":"7"}"#).unwrap();
        assert_eq!(
            t,
            T {
                b: b"hi\n".to_vec(),
                n: 12,
                u: 7
            }
        );
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"b":"aGkK","n":"12","u":7}"#
        );
        let t: T = serde_json::from_str(r#"{"b":"_-8","n":"-3","u":7}"#).unwrap();
        assert_eq!(t.b, vec![0xff, 0xef]);
        assert_eq!(t.n, -3);
        assert!(serde_json::from_str::<T>(r#"{"b":"!!","n":1,"u":1}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"b":"","n":1,"u":-1}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"b":"","n":1.5,"u":1}"#).is_err());
    }
}
