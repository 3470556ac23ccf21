//! Tests of [`Catalog`] against real SQLite (in memory and on disk).

use std::collections::HashSet;
use std::time::Instant;

use super::*;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn sid(s: &str) -> SandboxId {
    s.parse().unwrap()
}

const T0: i64 = 1_787_392_800_000; // 2026-08-22T10:00:00Z

fn rec(id: &str, state: CatalogState, started_ms: i64) -> SandboxRecord {
    SandboxRecord {
        id: sid(id),
        template: "base".parse().unwrap(),
        alias: Some("base".into()),
        client_id: "6532622b".into(),
        state,
        started_at: at(started_ms),
        end_at: Some(at(started_ms + 300_000)),
        timeout_secs: 300,
        auto_pause: true,
        auto_pause_timeout_ms: Some(600_000),
        auto_pause_memory: true,
        auto_resume: false,
        metadata: BTreeMap::from([("owner".into(), "alice".into())]),
        env_vars: BTreeMap::from([("K".into(), "V".into())]),
        envd_access_token: format!("token-{id}"),
        cpu_count: 2,
        memory_mb: 512,
        disk_size_mb: 1024,
        allow_internet: true,
        paused_at: None,
        created_at: at(started_ms),
        updated_at: at(started_ms),
    }
}

fn ids(items: &[SandboxRecord]) -> Vec<String> {
    items.iter().map(|r| r.id.to_string()).collect()
}

/// Pages through everything matching `filter`, returning the ids in page order and the
/// number of pages.
fn all_pages(
    c: &Catalog,
    filter: &ListFilter,
    limit: u32,
    order: SortOrder,
) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = c
            .list(
                filter,
                &PageRequest {
                    limit,
                    order,
                    next_token: token.take(),
                },
            )
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= limit as usize);
        out.extend(ids(&page.items));
        match page.next_token {
            Some(t) => token = Some(t),
            None => return (out, pages),
        }
    }
}

#[test]
fn crud_round_trip() {
    let c = Catalog::open_in_memory().unwrap();
    let r = rec("sbx1", CatalogState::Running, T0);
    c.insert(&r).unwrap();
    assert_eq!(c.get(&r.id).unwrap(), Some(r.clone()));
    assert_eq!(c.find_by_token("token-sbx1").unwrap(), Some(r.clone()));
    assert_eq!(c.find_by_token("nope").unwrap(), None);

    let err = c.insert(&r).unwrap_err();
    assert!(
        matches!(&err, CatalogError::AlreadyExists { id } if *id == r.id),
        "{err:?}"
    );
    let mut dup_token = rec("sbx2", CatalogState::Running, T0);
    dup_token.envd_access_token = r.envd_access_token.clone();
    assert!(matches!(
        c.insert(&dup_token),
        Err(CatalogError::DuplicateToken { .. })
    ));

    let mut changed = r.clone();
    changed.metadata = BTreeMap::from([("team".into(), "x".into())]);
    changed.alias = None;
    changed.timeout_secs = 60;
    changed.auto_pause_timeout_ms = None;
    let stored = c.update(&changed).unwrap();
    assert!(stored.updated_at >= r.updated_at);
    assert_eq!(c.get(&r.id).unwrap(), Some(stored));
    // The metadata index follows the record.
    let by_old = ListFilter {
        metadata: BTreeMap::from([("owner".into(), "alice".into())]),
        ..ListFilter::default()
    };
    assert!(c
        .list(&by_old, &PageRequest::default())
        .unwrap()
        .items
        .is_empty());

    let deadline = at(T0 + 1_000_000);
    c.set_end_at(&r.id, Some(deadline)).unwrap();
    assert_eq!(c.get(&r.id).unwrap().unwrap().end_at, Some(deadline));

    c.delete(&r.id).unwrap();
    assert_eq!(c.get(&r.id).unwrap(), None);
    assert!(matches!(
        c.delete(&r.id),
        Err(CatalogError::NotFound { .. })
    ));
    assert!(matches!(c.update(&r), Err(CatalogError::NotFound { .. })));
    assert!(matches!(
        c.set_end_at(&r.id, None),
        Err(CatalogError::NotFound { .. })
    ));
    // Metadata rows went with it.
    let n: i64 = c
        .lock()
        .query_row("SELECT count(*) FROM sandbox_metadata", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn transitions_check_the_expected_state() {
    let c = Catalog::open_in_memory().unwrap();
    let r = rec("sbx1", CatalogState::Running, T0);
    c.insert(&r).unwrap();

    let p = c
        .update_state(&r.id, CatalogState::Running, CatalogState::Pausing)
        .unwrap();
    assert_eq!(p.state, CatalogState::Pausing);

    // A second pauser that still believes the sandbox is running loses.
    let err = c
        .update_state(&r.id, CatalogState::Running, CatalogState::Pausing)
        .unwrap_err();
    assert!(matches!(
        err,
        CatalogError::StateMismatch {
            expected: CatalogState::Running,
            actual: CatalogState::Pausing,
            ..
        }
    ));
    assert!(err.to_string().contains("sbx1"), "{err}");

    let paused = c
        .update_state(&r.id, CatalogState::Pausing, CatalogState::Paused)
        .unwrap();
    assert_eq!(paused.end_at, None);
    assert!(paused.paused_at.is_some());

    c.update_state(&r.id, CatalogState::Paused, CatalogState::Resuming)
        .unwrap();
    let running = c
        .update_state(&r.id, CatalogState::Resuming, CatalogState::Running)
        .unwrap();
    assert_eq!(running.paused_at, None);

    assert!(matches!(
        c.update_state(&sid("ghost"), CatalogState::Running, CatalogState::Killing),
        Err(CatalogError::NotFound { .. })
    ));
}

/// 7 sandboxes; two pairs share a start time so the id tie-break matters.
fn seven(c: &Catalog) -> Vec<SandboxRecord> {
    let starts = [T0, T0 + 10, T0 + 10, T0 + 20, T0 + 30, T0 + 30, T0 + 40];
    let recs: Vec<_> = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let state = if i % 3 == 0 {
                CatalogState::Running
            } else {
                CatalogState::Paused
            };
            rec(&format!("s{i}"), state, s)
        })
        .collect();
    c.insert_many(&recs).unwrap();
    recs
}

#[test]
fn keyset_pagination_has_no_duplicates_or_gaps_in_both_orders() {
    let c = Catalog::open_in_memory().unwrap();
    let recs = seven(&c);
    let mut asc_expected: Vec<_> = recs
        .iter()
        .map(|r| (r.started_at, r.id.to_string()))
        .collect();
    asc_expected.sort();
    let asc_expected: Vec<String> = asc_expected.into_iter().map(|(_, id)| id).collect();
    let mut desc_expected = asc_expected.clone();
    desc_expected.reverse();

    let (asc, pages) = all_pages(&c, &ListFilter::default(), 2, SortOrder::Asc);
    assert_eq!(pages, 4);
    assert_eq!(asc, asc_expected);
    let (desc, pages) = all_pages(&c, &ListFilter::default(), 2, SortOrder::Desc);
    assert_eq!(pages, 4);
    assert_eq!(desc, desc_expected);
    assert_eq!(desc.iter().collect::<HashSet<_>>().len(), 7);

    // Exactly `limit` rows left → no token on the last page.
    let (all, pages) = all_pages(&c, &ListFilter::default(), 7, SortOrder::Desc);
    assert_eq!((all.len(), pages), (7, 1));
}

#[test]
fn state_filter_with_pagination() {
    let c = Catalog::open_in_memory().unwrap();
    let recs = seven(&c);
    let paused: HashSet<String> = recs
        .iter()
        .filter(|r| r.state == CatalogState::Paused)
        .map(|r| r.id.to_string())
        .collect();
    let filter = ListFilter {
        states: BTreeSet::from([CatalogState::Paused, CatalogState::Pausing]),
        ..ListFilter::default()
    };
    for order in [SortOrder::Asc, SortOrder::Desc] {
        let (got, pages) = all_pages(&c, &filter, 2, order);
        assert_eq!(got.len(), paused.len());
        assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), paused);
        assert_eq!(pages, paused.len().div_ceil(2));
    }
    let running = ListFilter {
        states: BTreeSet::from([CatalogState::Running]),
        ..ListFilter::default()
    };
    let (got, _) = all_pages(&c, &running, 2, SortOrder::Asc);
    assert_eq!(got, vec!["s0", "s3", "s6"]);
}

#[test]
fn metadata_filter_is_an_and() {
    let c = Catalog::open_in_memory().unwrap();
    let mut a = rec("a", CatalogState::Running, T0);
    a.metadata = BTreeMap::from([
        ("user id".into(), "a&b=c/é".into()),
        ("app".into(), "prod".into()),
    ]);
    let mut b = rec("b", CatalogState::Running, T0 + 1);
    b.metadata = BTreeMap::from([
        ("user id".into(), "a&b=c/é".into()),
        ("app".into(), "dev".into()),
    ]);
    let mut d = rec("d", CatalogState::Paused, T0 + 2);
    d.metadata = BTreeMap::new();
    c.insert_many(&[a, b, d]).unwrap();

    let list = |pairs: &[(&str, &str)]| {
        let filter = ListFilter {
            metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ListFilter::default()
        };
        let (got, _) = all_pages(&c, &filter, 100, SortOrder::Asc);
        got
    };
    assert_eq!(list(&[("user id", "a&b=c/é")]), vec!["a", "b"]);
    assert_eq!(list(&[("user id", "a&b=c/é"), ("app", "prod")]), vec!["a"]);
    assert_eq!(
        list(&[("app", "prod"), ("app2", "x")]),
        Vec::<String>::new()
    );
    assert_eq!(list(&[]), vec!["a", "b", "d"]);
}

#[test]
fn started_after_and_template_filters() {
    let c = Catalog::open_in_memory().unwrap();
    let mut recs = seven(&c);
    let mut ci = rec("ci", CatalogState::Running, T0 + 50);
    ci.template = "code-interpreter-v1".parse().unwrap();
    ci.alias = Some("ci-alias".into());
    c.insert(&ci).unwrap();
    recs.push(ci);

    let after = ListFilter {
        started_after: Some(at(T0 + 20)),
        ..ListFilter::default()
    };
    let (got, _) = all_pages(&c, &after, 100, SortOrder::Asc);
    // Inclusive: s3 started exactly then.
    assert_eq!(got, vec!["s3", "s4", "s5", "s6", "ci"]);

    for name in ["code-interpreter-v1", "ci-alias"] {
        let by_template = ListFilter {
            template: Some(name.into()),
            ..ListFilter::default()
        };
        let (got, _) = all_pages(&c, &by_template, 100, SortOrder::Asc);
        assert_eq!(got, vec!["ci"], "{name}");
    }
    let base_after = ListFilter {
        template: Some("base".into()),
        started_after: Some(at(T0 + 20)),
        states: BTreeSet::from([CatalogState::Paused]),
        ..ListFilter::default()
    };
    let (got, _) = all_pages(&c, &base_after, 1, SortOrder::Desc);
    assert_eq!(got, vec!["s5", "s4"]);
}

#[test]
fn malformed_tokens_and_limits_are_errors() {
    let c = Catalog::open_in_memory().unwrap();
    seven(&c);
    for token in ["zz", "", "7b7d", "not a token"] {
        let err = c
            .list(
                &ListFilter::default(),
                &PageRequest {
                    next_token: Some(token.into()),
                    ..PageRequest::default()
                },
            )
            .unwrap_err();
        assert!(
            matches!(&err, CatalogError::InvalidPageToken { token: t, .. } if t == token),
            "{token:?}: {err}"
        );
    }
    assert!(matches!(
        c.list(
            &ListFilter::default(),
            &PageRequest {
                limit: 0,
                ..PageRequest::default()
            }
        ),
        Err(CatalogError::InvalidLimit { limit: 0 })
    ));
}

#[test]
fn count_by_state_counts_every_state() {
    let c = Catalog::open_in_memory().unwrap();
    seven(&c);
    let counts = c.count_by_state().unwrap();
    assert_eq!(counts.len(), CatalogState::ALL.len());
    assert_eq!(counts[&CatalogState::Running], 3);
    assert_eq!(counts[&CatalogState::Paused], 4);
    assert_eq!(counts[&CatalogState::Killing], 0);
}

#[test]
fn events_are_appended_in_order_and_outlive_the_sandbox() {
    let c = Catalog::open_in_memory().unwrap();
    let r = rec("sbx1", CatalogState::Running, T0);
    c.insert(&r).unwrap();
    let s1 = c
        .append_event(
            &r.id,
            &EventKind::Created,
            &serde_json::json!({"template": "base"}),
        )
        .unwrap();
    let s2 = c
        .append_event(
            &r.id,
            &EventKind::Paused,
            &serde_json::json!({"memory": true}),
        )
        .unwrap();
    c.append_event(&sid("other"), &EventKind::Created, &serde_json::Value::Null)
        .unwrap();
    c.delete(&r.id).unwrap();
    let s3 = c
        .append_event(&r.id, &EventKind::Killed, &serde_json::json!({}))
        .unwrap();
    assert!(s1 < s2 && s2 < s3);
    let events = c.events_for(&r.id).unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![EventKind::Created, EventKind::Paused, EventKind::Killed]
    );
    assert_eq!(events[1].detail, serde_json::json!({"memory": true}));
    assert_eq!(events[0].sandbox_id, r.id);
}

#[test]
fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let r = rec("sbx1", CatalogState::Running, T0);
    {
        let c = Catalog::open(&path).unwrap();
        assert_eq!(c.path(), Some(path.as_path()));
        c.insert(&r).unwrap();
        c.update_state(&r.id, CatalogState::Running, CatalogState::Pausing)
            .unwrap();
        c.update_state(&r.id, CatalogState::Pausing, CatalogState::Paused)
            .unwrap();
        c.append_event(&r.id, &EventKind::Paused, &serde_json::json!({}))
            .unwrap();
        let mode: String = c
            .lock()
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = c
            .lock()
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous must be FULL");
    }
    let c = Catalog::open(&path).unwrap();
    assert_eq!(c.schema_version().unwrap(), crate::SCHEMA_VERSION);
    let back = c.get(&r.id).unwrap().unwrap();
    assert_eq!(back.state, CatalogState::Paused);
    assert_eq!(back.metadata, r.metadata);
    assert_eq!(c.events_for(&r.id).unwrap().len(), 1);
    assert_eq!(
        c.find_by_token(&r.envd_access_token).unwrap().unwrap().id,
        r.id
    );
}

#[test]
fn catalog_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Catalog>();
    let c = std::sync::Arc::new(Catalog::open_in_memory().unwrap());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    c.insert(&rec(&format!("t{t}-{i}"), CatalogState::Running, T0 + i))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(c.count_by_state().unwrap()[&CatalogState::Running], 100);
}

#[test]
fn paging_10k_sandboxes_is_fast() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path().join("catalog.db")).unwrap();
    let recs: Vec<_> = (0..10_000i64)
        .map(|i| {
            let state = if i % 4 == 0 {
                CatalogState::Running
            } else {
                CatalogState::Paused
            };
            let mut r = rec(&format!("sbx{i:05}"), state, T0 + i / 3);
            r.metadata = BTreeMap::from([("shard".into(), (i % 10).to_string())]);
            r
        })
        .collect();
    let t = Instant::now();
    c.insert_many(&recs).unwrap();
    println!("inserted 10000 sandboxes in {:?}", t.elapsed());

    let filter = ListFilter {
        states: BTreeSet::from([CatalogState::Paused]),
        ..ListFilter::default()
    };
    let started = Instant::now();
    let (got, pages) = all_pages(&c, &filter, 100, SortOrder::Desc);
    let total = started.elapsed();
    assert_eq!(got.len(), 7_500);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 7_500);
    assert_eq!(pages, 75);
    println!(
        "paged 7500 paused sandboxes in {pages} pages: total {total:?}, {:?} per page",
        total / pages as u32
    );

    // What the server asks for on `state=paused`: every state listed as paused.
    let filter = ListFilter {
        states: BTreeSet::from([
            CatalogState::Pausing,
            CatalogState::Paused,
            CatalogState::Resuming,
        ]),
        ..ListFilter::default()
    };
    let started = Instant::now();
    let (got, pages) = all_pages(&c, &filter, 100, SortOrder::Desc);
    assert_eq!(got.len(), 7_500);
    println!(
        "paged 7500 wire-paused sandboxes (3 states) in {pages} pages: {:?} per page",
        started.elapsed() / pages as u32
    );

    let filter = ListFilter {
        states: BTreeSet::from([CatalogState::Paused]),
        metadata: BTreeMap::from([("shard".into(), "3".into())]),
        ..ListFilter::default()
    };
    let started = Instant::now();
    let (got, pages) = all_pages(&c, &filter, 100, SortOrder::Asc);
    println!(
        "paged {} paused sandboxes with metadata shard=3 in {pages} pages: {:?} per page",
        got.len(),
        started.elapsed() / pages as u32
    );
    assert_eq!(got.len(), 1_000);

    let conn = c.lock();
    let mut stmt = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT id FROM sandboxes s WHERE s.state IN ('paused') \
             AND (s.started_at, s.id) < (1, 'x') ORDER BY s.started_at DESC, s.id DESC LIMIT 101",
        )
        .unwrap();
    let plan: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    println!("plan: {plan:?}");
}
