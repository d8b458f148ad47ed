//! A custom request/response protocol in a few lines: a server answers each
//! `Echo` request with the same text; a client on another node asks once.
//! Run with `cargo run -p knotwork-node --example echo`.
#![allow(clippy::indexing_slicing)]

use knotwork_core::Keypair;
use knotwork_node::{Node, Sessions};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Echo(String);

impl Message for Echo {
    const NAME: &'static str = "example/echo/1";
    const MAX_BYTES: usize = 1026; // 2 bytes of length + up to 1024 bytes of text
}

#[tokio::main]
pub(crate) async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Node::builder(Keypair::generate()?)
        .listen("tcp/127.0.0.1:0".parse()?)
        .protocol("echo", Sessions::ALL, |channel| {
            let mut requests = channel.subscribe_requests::<Echo>();
            async move {
                while let Some((Echo(text), responder)) = requests.recv().await {
                    let _ = responder.respond(&Echo(text)).await;
                }
            }
        })
        .start()
        .await?;
    let client = Node::builder(Keypair::generate()?).start().await?;
    let channel = client.connect(&server.listen_addrs()[0]).await?;
    let Echo(reply) = channel.request::<Echo, Echo>(&Echo("hello".into())).await?;
    println!("{reply}");
    assert_eq!(reply, "hello");
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
