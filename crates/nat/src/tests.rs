//! The relay forwards ciphertext only: three nodes on the memory transport,
//! the relay's forwarded bytes recorded and searched for the plaintext.

use std::time::Duration;

use knotwork_core::{Keypair, MemoryTransport, PeerAddr};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

use knotwork_node::{Node, NodeBuilder, Sessions};

use crate::{Nat, NatConfig, NatEvent, RelayLimits};

#[derive(Serialize, Deserialize)]
struct Note(String);

impl Message for Note {
    const NAME: &'static str = "test/nat-note/1";
    const MAX_BYTES: usize = 4096;
}

fn node(net: &MemoryTransport, nat: &Nat) -> NodeBuilder {
    Node::builder(Keypair::generate().unwrap())
        .transport(net.clone())
        .listen("mem/0".parse().unwrap())
        .service(nat.clone())
        .protocol("test/nat-note", Sessions::ALL, |ch| {
            let mut requests = ch.subscribe_requests::<Note>();
            async move {
                while let Some((Note(text), responder)) = requests.recv().await {
                    let _ = responder.respond(&Note(text.to_uppercase())).await;
                }
            }
        })
}

#[tokio::test(start_paused = true)]
async fn the_relay_forwards_only_ciphertext() {
    let net = MemoryTransport::new();
    let relay_nat = Nat::new(NatConfig {
        relay_service: Some(RelayLimits::default()),
        ..NatConfig::default()
    });
    let relay = node(&net, &relay_nat).start().await.unwrap();
    let b_nat = Nat::new(NatConfig {
        relays: vec![relay.listen_addrs()[0].clone().into()],
        ..NatConfig::default()
    });
    let mut events = b_nat.events();
    let b = node(&net, &b_nat).start().await.unwrap();
    let relayed: PeerAddr = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(NatEvent::RelayReserved { addr, .. }) = events.recv().await {
                return addr;
            }
        }
    })
    .await
    .unwrap();
    let a = node(&net, &Nat::new(NatConfig::default()))
        .start()
        .await
        .unwrap();
    let ch = a.connect(&relayed).await.unwrap();
    let secret = "attack at dawn, the password is swordfish";
    let Note(answer) = ch
        .request::<Note, Note>(&Note(secret.into()))
        .await
        .unwrap();
    assert_eq!(answer, secret.to_uppercase());

    let forwarded = relay_nat.forwarded();
    assert!(
        forwarded.len() > 2 * secret.len(),
        "the circuit carried the exchange"
    );
    for needle in [secret, &secret.to_uppercase(), "swordfish", "SWORDFISH"] {
        assert!(
            !forwarded
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "plaintext {needle:?} seen by the relay"
        );
    }
    // Not even the peers' version messages pass in the clear.
    let name = knotwork_node::Version::NAME;
    assert!(!forwarded.windows(name.len()).any(|w| w == name.as_bytes()));
    let b_listen = b.listen_addrs()[0].to_string();
    assert!(
        !forwarded
            .windows(b_listen.len())
            .any(|w| w == b_listen.as_bytes())
    );
}
