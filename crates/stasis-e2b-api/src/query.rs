//! Query strings of the list endpoints: `GET /v2/sandboxes` and the legacy `GET /sandboxes`.
//!
//! Parse the *raw* query string (the part after `?`, still percent-encoded): the
//! `metadata` filter is encoded twice over and must be decoded level by level.
//!
//! * `state` — comma-separated `running`/`paused`; JS sends `state=running,paused`, Python
//!   `state=running%2Cpaused`; repeated `state=` keys add up. Omitted → both.
//! * `metadata` — the query value, once decoded, is itself a form-urlencoded string whose
//!   keys and values are percent-encoded once more: `{"user id": "a&b=c/é"}` arrives as
//!   `metadata=user%252520id%3Da%252526b%25253Dc%252F%2525C3%2525A9`. Pairs are ANDed.
//! * `limit` — 1..=100, default 100. `nextToken` — opaque. `order` — `asc`|`desc`
//!   (default `desc`, by start time). `startedAfter` — RFC 3339. `template` — id or alias.
//!
//! Unknown parameters are ignored. Every error names the parameter and the bad value;
//! [`crate::ErrorBody::from`] turns it into E2B's 400 body.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::response::SandboxState;

/// Largest and default page size of `GET /v2/sandboxes`.
pub const MAX_LIMIT: u32 = 100;

/// Characters percent-encoded in metadata keys and values (all but RFC 3986 unreserved),
/// like JavaScript's `encodeURIComponent`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A malformed list query. Each variant names the parameter and holds the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid percent-encoding in query parameter {parameter:?}: {raw:?}")]
    Encoding { parameter: String, raw: String },
    #[error("invalid state {value:?} in query parameter \"state\": expected running or paused")]
    State { value: String },
    #[error(
        "invalid query parameter \"limit\" {value:?}: expected an integer from 1 to {MAX_LIMIT}"
    )]
    Limit { value: String },
    #[error("invalid query parameter \"order\" {value:?}: expected asc or desc")]
    Order { value: String },
    #[error("invalid query parameter \"startedAfter\" {value:?}: expected an RFC 3339 timestamp")]
    StartedAfter { value: String },
    #[error("invalid query parameter \"metadata\" {value:?}: {reason}")]
    Metadata { value: String, reason: &'static str },
}

impl QueryError {
    /// The query parameter that was wrong.
    pub fn parameter(&self) -> &str {
        match self {
            QueryError::Encoding { parameter, .. } => parameter,
            QueryError::State { .. } => "state",
            QueryError::Limit { .. } => "limit",
            QueryError::Order { .. } => "order",
            QueryError::StartedAfter { .. } => "startedAfter",
            QueryError::Metadata { .. } => "metadata",
        }
    }
}

/// Which wire states to list. The default (and an omitted `state`) is both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateFilter {
    pub running: bool,
    pub paused: bool,
}

impl Default for StateFilter {
    fn default() -> Self {
        Self {
            running: true,
            paused: true,
        }
    }
}

impl StateFilter {
    /// Whether `state` is selected.
    pub fn contains(&self, state: SandboxState) -> bool {
        match state {
            SandboxState::Running => self.running,
            SandboxState::Paused => self.paused,
        }
    }

    /// The selected states, running first.
    pub fn states(&self) -> Vec<SandboxState> {
        let mut v = Vec::with_capacity(2);
        if self.running {
            v.push(SandboxState::Running);
        }
        if self.paused {
            v.push(SandboxState::Paused);
        }
        v
    }
}

/// Sort order by `startedAt` (ties broken by sandbox id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

impl SortOrder {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        }
    }
}

/// Parsed query of `GET /v2/sandboxes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub states: StateFilter,
    /// Key/value pairs that must all match.
    pub metadata: BTreeMap<String, String>,
    /// 1..=100.
    pub limit: u32,
    /// Echo of the previous page's `X-Next-Token`.
    pub next_token: Option<String>,
    pub order: SortOrder,
    pub started_after: Option<DateTime<Utc>>,
    /// Template id or alias.
    pub template: Option<String>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            states: StateFilter::default(),
            metadata: BTreeMap::new(),
            limit: MAX_LIMIT,
            next_token: None,
            order: SortOrder::default(),
            started_after: None,
            template: None,
        }
    }
}

/// Parsed query of the legacy `GET /sandboxes` (running sandboxes; `metadata` only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyListQuery {
    pub metadata: BTreeMap<String, String>,
}

/// Splits a raw query string into decoded (key, value) pairs, form-style (`+` is a space).
fn pairs(raw: &str) -> impl Iterator<Item = Result<(String, String), QueryError>> + '_ {
    raw.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = form_decode(k).ok_or_else(|| QueryError::Encoding {
            parameter: k.to_owned(),
            raw: pair.to_owned(),
        })?;
        let value = form_decode(v).ok_or_else(|| QueryError::Encoding {
            parameter: key.clone(),
            raw: pair.to_owned(),
        })?;
        Ok((key, value))
    })
}

/// Form-urlencoded decoding of one component; `None` if the result is not UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let plus: Cow<'_, str> = if s.contains('+') {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

/// Decodes one (already query-decoded) `metadata` value into its pairs, merging into `out`.
fn parse_metadata(value: &str, out: &mut BTreeMap<String, String>) -> Result<(), QueryError> {
    let bad = |reason| QueryError::Metadata {
        value: value.to_owned(),
        reason,
    };
    for pair in pairs(value) {
        let (k, v) = pair.map_err(|_| bad("not form-urlencoded UTF-8"))?;
        let k = percent_decode_str(&k)
            .decode_utf8()
            .map_err(|_| bad("key is not percent-encoded UTF-8"))?;
        let v = percent_decode_str(&v)
            .decode_utf8()
            .map_err(|_| bad("value is not percent-encoded UTF-8"))?;
        if k.is_empty() {
            return Err(bad("empty key"));
        }
        out.insert(k.into_owned(), v.into_owned());
    }
    Ok(())
}

/// Encodes metadata the way the SDKs do, ready to be the value of a `metadata` parameter
/// (it still gets the query string's own encoding on top).
fn encode_metadata(metadata: &BTreeMap<String, String>) -> String {
    let mut inner = form_urlencoded::Serializer::new(String::new());
    for (k, v) in metadata {
        inner.append_pair(
            &utf8_percent_encode(k, COMPONENT).to_string(),
            &utf8_percent_encode(v, COMPONENT).to_string(),
        );
    }
    inner.finish()
}

impl ListQuery {
    /// Parses the raw (still percent-encoded) query string of `GET /v2/sandboxes`.
    /// An empty string gives [`ListQuery::default`].
    pub fn parse(raw_query: &str) -> Result<ListQuery, QueryError> {
        let mut q = ListQuery::default();
        let mut states: Option<StateFilter> = None;
        for pair in pairs(raw_query) {
            let (key, value) = pair?;
            match key.as_str() {
                "state" => {
                    let f = states.get_or_insert(StateFilter {
                        running: false,
                        paused: false,
                    });
                    for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        match s {
                            "running" => f.running = true,
                            "paused" => f.paused = true,
                            other => {
                                return Err(QueryError::State {
                                    value: other.to_owned(),
                                })
                            }
                        }
                    }
                }
                "metadata" => parse_metadata(&value, &mut q.metadata)?,
                "limit" => {
                    q.limit = value
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or(QueryError::Limit { value })?;
                }
                "nextToken" => q.next_token = Some(value).filter(|t| !t.is_empty()),
                "order" => {
                    q.order = match value.as_str() {
                        "asc" => SortOrder::Asc,
                        "desc" => SortOrder::Desc,
                        _ => return Err(QueryError::Order { value }),
                    }
                }
                "startedAfter" => {
                    let at = DateTime::parse_from_rfc3339(value.trim())
                        .map_err(|_| QueryError::StartedAfter {
                            value: value.clone(),
                        })?
                        .with_timezone(&Utc);
                    q.started_after = Some(at);
                }
                "template" => q.template = Some(value).filter(|t| !t.is_empty()),
                _ => {}
            }
        }
        // `state=` with nothing in it selects nothing explicit: treat like omitted.
        q.states = match states {
            Some(f) if f.running || f.paused => f,
            _ => StateFilter::default(),
        };
        Ok(q)
    }

    /// The query string a client sends for this query, in the SDKs' encoding
    /// (defaults are left out). `ListQuery::parse(&q.to_query_string()) == Ok(q)`.
    pub fn to_query_string(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        if self.states != StateFilter::default() {
            let states: Vec<&str> = self.states.states().iter().map(|s| s.as_str()).collect();
            out.append_pair("state", &states.join(","));
        }
        if !self.metadata.is_empty() {
            out.append_pair("metadata", &encode_metadata(&self.metadata));
        }
        if self.limit != MAX_LIMIT {
            out.append_pair("limit", &self.limit.to_string());
        }
        if let Some(token) = &self.next_token {
            out.append_pair("nextToken", token);
        }
        if self.order != SortOrder::default() {
            out.append_pair("order", self.order.as_str());
        }
        if let Some(at) = &self.started_after {
            out.append_pair(
                "startedAfter",
                &at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            );
        }
        if let Some(template) = &self.template {
            out.append_pair("template", template);
        }
        out.finish()
    }
}

impl LegacyListQuery {
    /// Parses the raw query string of the legacy `GET /sandboxes`.
    pub fn parse(raw_query: &str) -> Result<LegacyListQuery, QueryError> {
        let mut q = LegacyListQuery::default();
        for pair in pairs(raw_query) {
            let (key, value) = pair?;
            if key == "metadata" {
                parse_metadata(&value, &mut q.metadata)?;
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn both() -> StateFilter {
        StateFilter::default()
    }

    #[test]
    fn empty_query_gives_defaults() {
        let q = ListQuery::parse("").unwrap();
        assert_eq!(q, ListQuery::default());
        assert_eq!(q.states, both());
        assert_eq!(q.limit, 100);
        assert_eq!(q.order, SortOrder::Desc);
    }

    #[test]
    fn state_in_every_encoding() {
        for raw in [
            "state=running,paused",
            "state=running%2Cpaused",
            "state=running%2cpaused",
            "state=running&state=paused",
            "state=paused,running",
        ] {
            assert_eq!(ListQuery::parse(raw).unwrap().states, both(), "{raw}");
        }
        let q = ListQuery::parse("state=paused").unwrap();
        assert!(q.states.paused && !q.states.running);
        assert_eq!(q.states.states(), vec![SandboxState::Paused]);
        let q = ListQuery::parse("state=running").unwrap();
        assert!(q.states.contains(SandboxState::Running));
        assert!(!q.states.contains(SandboxState::Paused));
        assert_eq!(ListQuery::parse("state=").unwrap().states, both());
    }

    #[test]
    fn metadata_is_double_decoded() {
        // e2b-compat §3.8: {'user id': 'a&b=c/é'}.
        let raw = "metadata=user%252520id%3Da%252526b%25253Dc%252F%2525C3%2525A9";
        let q = ListQuery::parse(raw).unwrap();
        let expected = BTreeMap::from([("user id".to_owned(), "a&b=c/é".to_owned())]);
        assert_eq!(q.metadata, expected);
        // Python's quote() leaves '/' alone; that decodes the same.
        let raw = "metadata=user%252520id%3Da%252526b%25253Dc%2F%2525C3%2525A9";
        assert_eq!(ListQuery::parse(raw).unwrap().metadata, expected);
        // Round trip through our own encoder.
        let q = ListQuery {
            metadata: expected.clone(),
            ..ListQuery::default()
        };
        let s = q.to_query_string();
        assert!(
            s.starts_with("metadata=user%252520id%3Da%252526b%25253Dc"),
            "{s}"
        );
        assert_eq!(ListQuery::parse(&s).unwrap(), q);
        // Legacy endpoint, same encoding.
        assert_eq!(LegacyListQuery::parse(&s).unwrap().metadata, expected);
    }

    #[test]
    fn multiple_metadata_pairs_are_collected() {
        let q = ListQuery {
            metadata: BTreeMap::from([
                ("app".to_owned(), "prod".to_owned()),
                ("user".to_owned(), "abc".to_owned()),
            ]),
            ..ListQuery::default()
        };
        let parsed = ListQuery::parse(&q.to_query_string()).unwrap();
        assert_eq!(parsed.metadata, q.metadata);
        // Simple, singly-encoded form as in the spec example "user=abc&app=prod".
        let parsed = ListQuery::parse("metadata=user%3Dabc%26app%3Dprod").unwrap();
        assert_eq!(parsed.metadata, q.metadata);
    }

    #[test]
    fn every_parameter_round_trips() {
        let q = ListQuery {
            states: StateFilter {
                running: false,
                paused: true,
            },
            metadata: BTreeMap::from([("k".to_owned(), "v w".to_owned())]),
            limit: 7,
            next_token: Some("abc123".into()),
            order: SortOrder::Asc,
            started_after: Some(Utc.with_ymd_and_hms(2026, 8, 22, 10, 0, 0).unwrap()),
            template: Some("base".into()),
        };
        let s = q.to_query_string();
        assert_eq!(ListQuery::parse(&s).unwrap(), q, "{s}");
    }

    #[test]
    fn started_after_accepts_offsets() {
        let q = ListQuery::parse("startedAfter=2026-08-22T12%3A00%3A00%2B02%3A00").unwrap();
        assert_eq!(
            q.started_after,
            Some(Utc.with_ymd_and_hms(2026, 8, 22, 10, 0, 0).unwrap())
        );
        let q = ListQuery::parse("startedAfter=2026-08-22T10:00:00Z").unwrap();
        assert!(q.started_after.is_some());
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        let cases: [(&str, &str); 9] = [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=-1", "limit"),
            ("limit=ten", "limit"),
            ("order=up", "order"),
            ("state=running,stopped", "state"),
            ("startedAfter=yesterday", "startedAfter"),
            ("metadata=%3D1", "metadata"),
            ("metadata=k%3D%25FF", "metadata"),
        ];
        for (raw, param) in cases {
            let err = ListQuery::parse(raw).unwrap_err();
            assert_eq!(err.parameter(), param, "{raw}: {err}");
        }
        assert_eq!(
            ListQuery::parse("state=stopped").unwrap_err(),
            QueryError::State {
                value: "stopped".into()
            }
        );
        let err = ListQuery::parse("limit=500").unwrap_err();
        assert!(err.to_string().contains("\"500\""), "{err}");
        assert!(matches!(
            ListQuery::parse("x=%FF").unwrap_err(),
            QueryError::Encoding { .. }
        ));
    }

    #[test]
    fn unknown_parameters_are_ignored() {
        let q = ListQuery::parse("foo=bar&limit=5&&nextToken=").unwrap();
        assert_eq!(q.limit, 5);
        assert_eq!(q.next_token, None);
    }
}
