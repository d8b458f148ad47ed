use super::*;
use proptest::prelude::*;

#[test]
fn requests_are_tagged_json_lines() {
    assert_eq!(
        encode(&Request::Peers).unwrap(),
        b"{\"request\":\"peers\"}\n"
    );
    assert_eq!(
        decode::<Request>(b"{\"request\":\"status\"}\n").unwrap(),
        Request::Status
    );
    assert_eq!(
        decode::<Request>(b"{\"request\":\"connect\",\"addr\":\"mem/1\"}\n").unwrap(),
        Request::Connect {
            addr: "mem/1".into()
        }
    );
}

#[test]
fn dht_requests_and_answers_are_tagged_json_lines() {
    let put = Request::DhtPut {
        key: "k".into(),
        value: "v".into(),
    };
    assert_eq!(
        encode(&put).unwrap(),
        b"{\"request\":\"dht_put\",\"key\":\"k\",\"value\":\"v\"}\n"
    );
    assert_eq!(
        decode::<Request>(b"{\"request\":\"dht_find\",\"peer\":\"x\"}").unwrap(),
        Request::DhtFind { peer: "x".into() }
    );
    let found = Response::DhtPeer {
        peer: Some(DhtPeerEntry {
            peer_id: "p".into(),
            addrs: vec!["tcp/127.0.0.1:1".into()],
        }),
    };
    assert_eq!(decode::<Response>(&encode(&found).unwrap()).unwrap(), found);
    assert_eq!(
        encode(&Response::DhtRecord { record: None }).unwrap(),
        b"{\"response\":\"dht_record\",\"record\":null}\n"
    );
}

#[test]
fn gossip_task_and_metrics_requests_are_tagged_json_lines() {
    let publish = Request::GossipPublish {
        topic: "news".into(),
        data: "hi".into(),
    };
    assert_eq!(
        encode(&publish).unwrap(),
        b"{\"request\":\"gossip_publish\",\"topic\":\"news\",\"data\":\"hi\"}\n"
    );
    assert_eq!(
        decode::<Request>(b"{\"request\":\"task_submit\",\"kind\":\"fnv\",\"input\":\"x\"}")
            .unwrap(),
        Request::TaskSubmit {
            kind: "fnv".into(),
            input: "x".into()
        }
    );
    assert_eq!(
        decode::<Request>(b"{\"request\":\"metrics\"}").unwrap(),
        Request::Metrics
    );
}

#[test]
fn a_peer_entry_without_sources_reads_as_none() {
    let line = br#"{"peer_id":"x","addr":"tcp/1.2.3.4:5","direction":"inbound","session":"inbound","rtt_us":null,"connected_ms":7,"relayed":false}"#;
    let entry: PeerEntry = decode(line).unwrap();
    assert!(entry.sources.is_empty());
}

#[test]
fn unknown_requests_and_fields_are_malformed() {
    for bad in [
        &b"{\"request\":\"reboot\"}"[..],
        b"{}",
        b"peers",
        b"\xff\xfe",
    ] {
        assert!(
            matches!(decode::<Request>(bad), Err(KnotError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn long_and_truncated_lines_are_named() {
    let long = vec![b' '; MAX_LINE + 10];
    assert!(matches!(
        read_message::<Request, _>(&long[..]).await,
        Err(KnotError::LineTooLong)
    ));
    assert!(matches!(
        read_message::<Request, _>(&b"{\"request\":"[..]).await,
        Err(KnotError::Truncated)
    ));
}

fn entry() -> impl Strategy<Value = PeerEntry> {
    (
        "[1-9A-Za-z]{1,44}",
        "tcp/[0-9.:]{1,21}",
        any::<bool>(),
        prop::option::of(any::<u64>()),
        any::<u64>(),
        prop::collection::vec("mdns|dht|seed|manual", 0..3),
    )
        .prop_map(
            |(peer_id, addr, inbound, rtt_us, connected_ms, sources)| PeerEntry {
                peer_id,
                direction: if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                session: if inbound { "inbound" } else { "seed" }.to_owned(),
                rtt_us,
                connected_ms,
                relayed: addr_is_relay(&addr),
                sources,
                addr,
            },
        )
}

fn addr_is_relay(addr: &str) -> bool {
    addr.starts_with("relay/")
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        prop::collection::vec(entry(), 0..4).prop_map(|peers| Response::Peers { peers }),
        (
            "[1-9A-Za-z]{1,44}",
            prop::collection::vec("tcp/[0-9.:]{1,21}", 0..3),
            any::<usize>(),
            any::<usize>(),
            any::<u64>(),
            any::<usize>(),
            "(unknown|private|public tcp/[0-9.:]{1,21})"
        )
            .prop_map(
                |(peer_id, listen, inbound, outbound, uptime_ms, banned, reachability)| {
                    Response::Status(StatusReport {
                        peer_id,
                        listen,
                        inbound,
                        outbound,
                        uptime_ms,
                        banned,
                        reachability,
                    })
                },
            ),
        ".*".prop_map(|message| Response::Error { message }),
        (
            "[1-9A-Za-z]{1,44}",
            "relay/mem/[0-9]{1,3}/[1-9A-Za-z]{44}/[1-9A-Za-z]{44}",
            any::<bool>()
        )
            .prop_map(|(peer_id, addr, relayed)| Response::Connected {
                peer_id,
                addr,
                relayed
            }),
        (
            "[1-9A-Za-z]{1,44}",
            any::<u64>(),
            any::<usize>(),
            any::<u64>()
        )
            .prop_map(|(origin, seq, sent, at_us)| Response::GossipPublished {
                origin,
                seq,
                sent,
                at_us
            }),
        (
            any::<u64>(),
            prop::option::of("[1-9A-Za-z]{1,44}"),
            "done|failed|exhausted|no_workers|cancelled",
            prop::option::of(".*"),
            any::<u32>(),
            any::<u64>()
        )
            .prop_map(|(id, worker, outcome, output, attempts, ms)| {
                Response::TaskResult {
                    id,
                    worker,
                    outcome,
                    output,
                    attempts,
                    ms,
                }
            }),
        ".*".prop_map(|text| Response::Metrics { text }),
    ]
}

proptest! {
    #[test]
    fn responses_round_trip(resp in response()) {
        let line = encode(&resp).unwrap();
        prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        prop_assert_eq!(decode::<Response>(&line).unwrap(), resp);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<Request>(&bytes);
        let _ = decode::<Response>(&bytes);
    }
}
