use super::*;
use knotwork_log::{LogConfig, LogFormat, LogRotation};

fn field_of(e: KnotError) -> String {
    match e {
        KnotError::BadValue { field, .. } => field,
        other => panic!("expected BadValue, got {other:?}"),
    }
}

#[test]
fn the_example_is_the_default_and_validates() {
    let parsed = FileConfig::from_toml(EXAMPLE).unwrap();
    assert_eq!(parsed, FileConfig::default());
    let v = parsed.validate().unwrap();
    assert_eq!(
        v.listen,
        vec!["tcp/0.0.0.0:4000".parse::<PeerAddr>().unwrap()]
    );
    let d = NodeConfig::default();
    assert_eq!(v.node.ping, d.ping);
    assert_eq!(v.node.backoff, d.backoff);
    assert_eq!(v.node.channel.meter, d.channel.meter);
    assert_eq!(v.node.channel.default_budget, d.channel.default_budget);
    assert_eq!(v.node.handshake_timeout, d.handshake_timeout);
}

#[test]
fn the_example_spells_out_every_field() {
    let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
    let fields = env_fields().unwrap();
    assert!(fields.len() > 20, "{} fields", fields.len());
    for f in fields {
        let mut at = &example;
        let (last, sections) = f.path.split_last().unwrap();
        for s in sections {
            at = at[s.as_str()].as_table().unwrap();
        }
        assert!(
            at.contains_key(last),
            "{} missing in knot.example.toml",
            f.var
        );
    }
}

#[test]
fn an_empty_file_is_all_defaults() {
    assert_eq!(FileConfig::from_toml("").unwrap(), FileConfig::default());
}

#[test]
fn unknown_keys_and_wrong_types_are_named() {
    for (text, key) in [
        ("max_inboud = 3", "max_inboud"),
        ("max_inbound = \"many\"", "max_inbound"),
        ("max_inbound = -1", "max_inbound"),
        ("[ping]\nintervl_ms = 3", "intervl_ms"),
        ("[pong]\ninterval_ms = 3", "pong"),
        (
            "[channel.budgets]\n\"a/1\" = { per_second = 1.0, brust = 2 }",
            "brust",
        ),
    ] {
        let e = FileConfig::from_toml(text).unwrap_err();
        assert!(
            matches!(&e, KnotError::Syntax(m) if m.contains(key)),
            "{text}: {e}"
        );
    }
}

#[test]
fn bad_addresses_name_the_list_entry() {
    let c = FileConfig {
        seeds: vec!["tcp/1.2.3.4:5".into(), "udp/1.2.3.4:5".into()],
        ..FileConfig::default()
    };
    match c.validate() {
        Err(KnotError::BadValue { field, value, .. }) => {
            assert_eq!(field, "seeds[1]");
            assert_eq!(value, "udp/1.2.3.4:5");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn quic_listen_and_dial_preference_come_from_the_file() {
    let c = FileConfig::from_toml(
        "listen = [\"quic/0.0.0.0:4000\", \"tcp/0.0.0.0:4000\"]\ndial_preference = [\"tcp\", \"quic\"]",
    )
    .unwrap();
    let v = c.validate().unwrap();
    assert_eq!(
        v.listen[0],
        "quic/0.0.0.0:4000".parse::<PeerAddr>().unwrap()
    );
    assert_eq!(v.node.dial_preference, vec!["tcp", "quic"]);
    let bad = FileConfig {
        dial_preference: vec!["quic".into(), "QUIC!".into()],
        ..FileConfig::default()
    };
    assert_eq!(field_of(bad.validate().unwrap_err()), "dial_preference[1]");
}

type Breaker = fn(&mut FileConfig);

#[test]
fn out_of_range_values_are_refused_by_name() {
    let cases: [(&str, Breaker); 14] = [
        ("max_inbound", |c| c.max_inbound = 0),
        ("handshake_timeout_ms", |c| c.handshake_timeout_ms = 0),
        ("ping.timeout_ms", |c| c.ping.timeout_ms = 0),
        ("channel.send_queue", |c| c.channel.send_queue = 0),
        ("channel.max_frame_len", |c| {
            c.channel.max_frame_len = 1 << 30
        }),
        ("channel.default_per_second", |c| {
            c.channel.default_per_second = f64::NAN
        }),
        ("channel.budgets.\"x/1\".burst", |c| {
            c.channel.budgets.insert(
                "x/1".into(),
                BudgetEntry {
                    per_second: 1.0,
                    burst: 0,
                },
            );
        }),
        ("meter.decay_per_second", |c| {
            c.meter.decay_per_second = -1.0
        }),
        ("backoff.max_ms", |c| c.backoff.max_ms = 1),
        ("nat.upnp_lease_ms", |c| c.nat.upnp_lease_ms = 999),
        ("nat.reachability_quorum", |c| c.nat.reachability_quorum = 0),
        ("relay.max_circuits", |c| {
            c.relay.service = true;
            c.relay.max_circuits = 0
        }),
        ("relay.max_bytes", |c| {
            c.relay.service = true;
            c.relay.max_bytes = 0
        }),
        ("relay.max_duration_ms", |c| {
            c.relay.service = true;
            c.relay.max_duration_ms = 0
        }),
    ];
    for (field, break_it) in cases {
        let mut c = FileConfig::default();
        break_it(&mut c);
        assert_eq!(field_of(c.validate().unwrap_err()), field);
    }
}

#[test]
fn budgets_are_keyed_by_message_name() {
    let c = FileConfig::from_toml(
        "[channel.budgets]\n\"example/echo/1\" = { per_second = 5.0, burst = 9 }",
    )
    .unwrap();
    let v = c.validate().unwrap();
    assert_eq!(
        v.node
            .channel
            .budget(knotwork_wire::message_id("example/echo/1")),
        RateBudget::new(5.0, 9)
    );
}

#[test]
fn environment_overrides_the_file() {
    let mut c = FileConfig::from_toml("max_inbound = 5\n[ping]\ntimeout_ms = 9").unwrap();
    c.apply_env([
        ("KNOT_MAX_INBOUND", "7"),
        ("KNOT_LISTEN", "tcp/127.0.0.1:1, tcp/[::1]:2"),
        ("KNOT_PING_INTERVAL_MS", "1500"),
        ("KNOT_METER_DECAY_PER_SECOND", "0.5"),
        ("KNOT_DATA_DIR", "/tmp/k"),
        ("HOME", "/root"),
    ])
    .unwrap();
    assert_eq!(c.max_inbound, 7);
    assert_eq!(c.listen, vec!["tcp/127.0.0.1:1", "tcp/[::1]:2"]);
    assert_eq!(c.ping.interval_ms, 1500);
    assert_eq!(c.ping.timeout_ms, 9, "the file's value stays");
    assert_eq!(c.meter.decay_per_second, 0.5);
    assert_eq!(c.data_dir, PathBuf::from("/tmp/k"));
}

#[test]
fn the_nat_section_is_off_by_default_and_set_by_file_or_environment() {
    assert!(!FileConfig::default().validate().unwrap().nat.upnp);
    let mut c = FileConfig::from_toml("[nat]\nupnp = true").unwrap();
    c.apply_env([
        ("KNOT_NAT_UPNP_LEASE_MS", "4000"),
        ("KNOT_NAT_REACHABILITY_QUORUM", "1"),
    ])
    .unwrap();
    let v = c.validate().unwrap();
    assert_eq!(
        v.nat,
        NatSection {
            upnp: true,
            upnp_lease_ms: 4000,
            reachability_quorum: 1,
        }
    );
    assert_eq!(v.nat_config.reachability.quorum, 1);
}

#[test]
fn the_dht_section_takes_its_mode_from_file_and_environment() {
    let mut c = FileConfig::from_toml("[dht]\nmode = \"client\"").unwrap();
    assert_eq!(c.dht.mode, DhtMode::Client);
    assert!(c.dht.enabled);
    c.apply_env([("KNOT_DHT_ENABLED", "false"), ("KNOT_DHT_MODE", "server")])
        .unwrap();
    assert_eq!(
        c.validate().unwrap().dht,
        DhtSection {
            enabled: false,
            mode: DhtMode::Server
        }
    );
    let e = c.apply_env([("KNOT_DHT_MODE", "relay")]).unwrap_err();
    assert_eq!(field_of(e), "KNOT_DHT_MODE");
    let e = FileConfig::from_toml("[dht]\nmode = \"relay\"").unwrap_err();
    assert!(
        matches!(&e, KnotError::Syntax(m) if m.contains("relay")),
        "{e}"
    );
}

#[test]
fn bad_environment_values_name_the_variable() {
    let mut c = FileConfig::default();
    let e = c.apply_env([("KNOT_MAX_INBOUND", "lots")]).unwrap_err();
    assert_eq!(field_of(e), "KNOT_MAX_INBOUND");
    let e = c.apply_env([("KNOT_MAX_INBOUND", "-3")]).unwrap_err();
    assert_eq!(field_of(e), "KNOT_MAX_INBOUND");
    let e = c.apply_env([("KNOT_COLOUR", "blue")]).unwrap_err();
    assert!(
        matches!(&e, KnotError::UnknownVariable(v) if v == "KNOT_COLOUR"),
        "{e:?}"
    );
    assert_eq!(c, FileConfig::default(), "failed overrides change nothing");
}

#[test]
fn mdns_is_on_by_default_and_can_be_switched_off() {
    assert!(FileConfig::default().validate().unwrap().mdns.enabled);
    let c = FileConfig::from_toml("[mdns]\nenabled = false\n").unwrap();
    assert!(!c.validate().unwrap().mdns.enabled);
    let mut c = FileConfig::default();
    c.apply_env([("KNOT_MDNS_ENABLED", "false")]).unwrap();
    assert!(!c.mdns.enabled);
}

#[test]
fn the_default_service_type_is_the_mdns_crates() {
    assert_eq!(
        MdnsSection::default().service_type,
        knotwork_discovery_mdns::DEFAULT_SERVICE_TYPE
    );
}

#[test]
fn home_is_expanded_only_at_the_start() {
    let home = Path::new("/home/k");
    assert_eq!(
        expand_home(Path::new("~/.local/share/knot"), Some(home)),
        PathBuf::from("/home/k/.local/share/knot")
    );
    assert_eq!(
        expand_home(Path::new("~"), Some(home)),
        PathBuf::from("/home/k")
    );
    assert_eq!(
        expand_home(Path::new("/a/~/b"), Some(home)),
        PathBuf::from("/a/~/b")
    );
    assert_eq!(expand_home(Path::new("~/x"), None), PathBuf::from("~/x"));
}

#[test]
fn the_log_section_comes_from_file_and_knot_log_variables() {
    let mut c = FileConfig::from_toml("[log]\nlevel = \"debug\"\nfile = \"~/knot.log\"\n").unwrap();
    c.apply_env([
        ("KNOT_LOG_FORMAT", "json"),
        ("KNOT_LOG_ROTATION", "daily"),
        ("KNOT_LOG_MAX_FILES", "7"),
    ])
    .unwrap();
    let home = Path::new("/home/k");
    assert_eq!(
        c.log.log_config(Some(home), Some("info".into())),
        LogConfig {
            level: "debug".into(),
            format: LogFormat::Json,
            file: Some(PathBuf::from("/home/k/knot.log")),
            rotation: LogRotation::Daily,
            max_files: Some(7),
        }
    );
    c.apply_env([("KNOT_LOG_FILE", ""), ("KNOT_LOG_MAX_FILES", "0")])
        .unwrap();
    let stderr = c.log.log_config(Some(home), None);
    assert_eq!((stderr.file, stderr.max_files), (None, None));
    assert_eq!(stderr.level, "debug", "the file's level wins over RUST_LOG");
    c.log.level = String::new();
    assert_eq!(c.log.log_config(None, Some("info".into())).level, "info");
    assert_eq!(c.log.log_config(None, None).level, "warn");
    let e = c.apply_env([("KNOT_LOG_FORMAT", "xml")]).unwrap_err();
    assert_eq!(field_of(e), "KNOT_LOG_FORMAT");
    let e = FileConfig::from_toml("[log]\nrotation = \"weekly\"").unwrap_err();
    assert!(
        matches!(&e, KnotError::Syntax(m) if m.contains("weekly")),
        "{e}"
    );
}

#[test]
fn the_health_section_sets_the_checks_and_their_push() {
    let mut c = FileConfig::from_toml("[health]\ninterval_ms = 500\nmin_peers = 3\n").unwrap();
    c.apply_env([("KNOT_HEALTH_PUSH_BURST", "5")]).unwrap();
    let h = c.validate().unwrap().health;
    assert_eq!(h.interval, Duration::from_millis(500));
    assert_eq!((h.min_peers, h.push_burst), (3, 5));
    assert_eq!(
        h.push_window,
        knotwork_tasks::HealthConfig::default().push_window
    );
    c.health.push_burst = 0;
    assert_eq!(field_of(c.validate().unwrap_err()), "health.push_burst");
    c.health.push_burst = 1;
    c.health.interval_ms = 0;
    assert_eq!(field_of(c.validate().unwrap_err()), "health.interval_ms");
}

#[test]
fn ble_is_off_by_default_and_set_by_file_or_environment() {
    let v = FileConfig::default().validate().unwrap();
    assert_eq!(v.ble, BleSection::default());
    assert!(!v.ble.enabled);
    let mut c = FileConfig::from_toml("[ble]\nenabled = true\nadvertise = false\n").unwrap();
    c.apply_env([
        ("KNOT_BLE_ADAPTER", "hci1"),
        ("KNOT_BLE_SCAN_TIMEOUT_MS", "2500"),
    ])
    .unwrap();
    assert_eq!(
        c.validate().unwrap().ble,
        BleSection {
            enabled: true,
            adapter: "hci1".into(),
            advertise: false,
            scan_timeout_ms: 2500,
        }
    );
    let c = FileConfig::from_toml("[ble]\nscan_timeout_ms = 0").unwrap();
    assert_eq!(field_of(c.validate().unwrap_err()), "ble.scan_timeout_ms");
    let c = FileConfig::from_toml("[ble]\nadapter = \"\"").unwrap();
    assert_eq!(field_of(c.validate().unwrap_err()), "ble.adapter");
}

#[test]
fn discovery_preference_names_sources() {
    assert!(
        FileConfig::default()
            .validate()
            .unwrap()
            .discovery
            .prefer
            .is_empty()
    );
    let mut c = FileConfig::default();
    c.apply_env([("KNOT_DISCOVERY_PREFERENCE", "ble, mdns, dht")])
        .unwrap();
    assert_eq!(
        c.validate().unwrap().discovery.prefer,
        vec![
            DiscoverySource::Ble,
            DiscoverySource::Mdns,
            DiscoverySource::Dht
        ]
    );
    let c = FileConfig::from_toml("discovery_preference = [\"mdns\", \"carrier-pigeon\"]").unwrap();
    assert_eq!(
        field_of(c.validate().unwrap_err()),
        "discovery_preference[1]"
    );
}

#[test]
fn compression_is_off_by_default_and_set_by_file_or_environment() {
    use knotwork_node::Compression;
    let d = FileConfig::default().validate().unwrap();
    assert_eq!(d.node.channel.compression, Compression::None);
    let mut c = FileConfig::from_toml("[channel]\ncompression = \"lz4\"").unwrap();
    assert_eq!(
        c.validate().unwrap().node.channel.compression,
        Compression::Lz4
    );
    c.apply_env([("KNOT_CHANNEL_COMPRESSION", "zstd")]).unwrap();
    assert_eq!(
        c.validate().unwrap().node.channel.compression,
        Compression::Zstd
    );
    let e = c
        .apply_env([("KNOT_CHANNEL_COMPRESSION", "gzip")])
        .unwrap_err();
    assert_eq!(field_of(e), "KNOT_CHANNEL_COMPRESSION");
    let e = FileConfig::from_toml("[channel]\ncompression = \"gzip\"").unwrap_err();
    assert!(
        matches!(&e, KnotError::Syntax(m) if m.contains("gzip")),
        "{e}"
    );
}
