//! The opaque page token of [`crate::Catalog::list`]: hex of a small JSON object holding
//! the sort key `(started_at, id)` of the last row returned.

use serde::{Deserialize, Serialize};
use stasis_types::SandboxId;

use crate::CatalogError;

/// Token format version; bump when the contents change.
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PageToken {
    /// Format version.
    pub v: u32,
    /// `started_at` of the last row, epoch milliseconds.
    pub s: i64,
    /// Id of the last row.
    pub i: SandboxId,
}

impl PageToken {
    pub(crate) fn new(started_at_ms: i64, id: SandboxId) -> Self {
        Self {
            v: VERSION,
            s: started_at_ms,
            i: id,
        }
    }

    pub(crate) fn encode(&self) -> String {
        // Serializing a struct of an integer and a validated id cannot fail.
        hex::encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(crate) fn decode(token: &str) -> Result<Self, CatalogError> {
        let bad = |reason: String| CatalogError::InvalidPageToken {
            token: token.to_owned(),
            reason,
        };
        let bytes = hex::decode(token).map_err(|e| bad(format!("not hex: {e}")))?;
        let t: PageToken =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("bad contents: {e}")))?;
        if t.v != VERSION {
            return Err(bad(format!("unsupported version {}", t.v)));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let t = PageToken::new(1234, "abc".parse().unwrap());
        assert_eq!(PageToken::decode(&t.encode()).unwrap(), t);
        for bad in [
            "",
            "zz",
            "abc",
            &hex::encode(b"{}"),
            &hex::encode(br#"{"v":2,"s":1,"i":"a"}"#),
            &hex::encode(br#"{"v":1,"s":1,"i":"../x"}"#),
        ] {
            assert!(
                matches!(
                    PageToken::decode(bad),
                    Err(CatalogError::InvalidPageToken { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }
}
