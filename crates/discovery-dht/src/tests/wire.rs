//! The message encoding: round trips and arbitrary bytes.

use std::net::SocketAddr;

use proptest::prelude::*;

use crate::message::{WireAddr, WirePeer, WireRecord};
use crate::*;

fn any_addr() -> impl Strategy<Value = WireAddr> {
    prop_oneof![
        // Scope ids and flow info are not sent (as in core's PeerAddr).
        any::<SocketAddr>().prop_map(|sa| WireAddr::Tcp(SocketAddr::new(sa.ip(), sa.port()))),
        "[a-z0-9:]{1,20}".prop_map(WireAddr::Ble),
        any::<u64>().prop_map(WireAddr::Mem),
    ]
}

fn any_peer() -> impl Strategy<Value = WirePeer> {
    (any::<[u8; 32]>(), prop::collection::vec(any_addr(), 0..4))
        .prop_map(|(id, addrs)| WirePeer { id, addrs })
}

fn any_record() -> impl Strategy<Value = WireRecord> {
    (
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(any::<u8>(), 0..200),
        any::<[u8; 32]>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..70),
    )
        .prop_map(|(key, value, publisher, expires, signature)| WireRecord {
            key,
            value,
            publisher,
            expires,
            signature,
        })
}

fn any_message() -> impl Strategy<Value = DhtMessage> {
    let peers = || prop::collection::vec(any_peer(), 0..20);
    let key = || prop::collection::vec(any::<u8>(), 0..64);
    let request = prop_oneof![
        Just(Request::Ping),
        any::<[u8; 32]>().prop_map(|target| Request::FindNode { target }),
        key().prop_map(|key| Request::GetValue { key }),
        any_record().prop_map(|record| Request::PutValue { record }),
        (key(), prop::collection::vec(any_addr(), 0..8))
            .prop_map(|(key, addrs)| Request::AddProvider { key, addrs }),
        key().prop_map(|key| Request::GetProviders { key }),
    ];
    let response = prop_oneof![
        Just(Response::Pong),
        peers().prop_map(|closer| Response::Nodes { closer }),
        (prop::option::of(any_record()), peers())
            .prop_map(|(record, closer)| Response::Value { record, closer }),
        Just(Response::Stored),
        (peers(), peers())
            .prop_map(|(providers, closer)| Response::Providers { providers, closer }),
    ];
    prop_oneof![
        (any::<u64>(), any::<bool>(), request).prop_map(|(id, client, body)| DhtMessage::Request {
            id,
            client,
            body
        }),
        (any::<u64>(), response).prop_map(|(id, body)| DhtMessage::Response { id, body }),
    ]
}

proptest! {
    #[test]
    fn message_round_trip(msg in any_message()) {
        let bytes = msg.encode().unwrap();
        prop_assert_eq!(DhtMessage::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = DhtMessage::decode(&bytes);
    }
}
