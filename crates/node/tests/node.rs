//! A node over real gRPC on loopback: durability across restarts (with and without
//! checkpoints), and bad input refused while the node keeps serving.

use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use settle_ledger::{Account, Transfer, TransferFlags};
use settle_node::{Config, Node, NodeError};
use settle_proto::convert;
use settle_proto::pb::{self, ledger_client::LedgerClient};
use tonic::transport::Channel;

fn config(dir: &Path, checkpoint_bytes: u64) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        fsync: true,
        checkpoint_bytes,
    }
}

async fn connect(node: &Node) -> LedgerClient<Channel> {
    LedgerClient::connect(format!("http://{}", node.local_addr())).await.unwrap()
}

fn account(id: u128) -> Account {
    Account { id, ledger: 1, code: 1, ..Default::default() }
}

fn transfer(id: u128, dr: u128, cr: u128, amount: u128, flags: TransferFlags) -> Transfer {
    Transfer {
        id,
        debit_account_id: dr,
        credit_account_id: cr,
        amount,
        ledger: 1,
        code: 1,
        flags,
        ..Default::default()
    }
}

async fn create_transfers(
    client: &mut LedgerClient<Channel>,
    transfers: &[Transfer],
) -> Vec<settle_ledger::CreateTransferResult> {
    let reply = client.create_transfers(convert::transfers_request(transfers)).await.unwrap();
    convert::transfer_results_from_pb(&reply.get_ref().results).unwrap()
}

async fn lookup_accounts(client: &mut LedgerClient<Channel>, ids: &[u128]) -> Vec<Account> {
    let reply =
        client.lookup_accounts(pb::LookupRequest { ids: convert::ids_to_pb(ids) }).await.unwrap();
    reply.get_ref().accounts.iter().map(|a| Account::try_from(a).unwrap()).collect()
}

/// Writes accounts and transfers in many requests, restarts, and checks everything is
/// there; `checkpoint_bytes` small forces checkpoints and log segment deletion.
async fn survives_restart(checkpoint_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), checkpoint_bytes)).await.unwrap();
    let mut client = connect(&node).await;
    let reply = client
        .create_accounts(convert::accounts_request(&[account(1), account(2), account(3)]))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().results, vec![0, 0, 0]);
    for round in 0..20u128 {
        let results = create_transfers(
            &mut client,
            &[
                transfer(100 + round, 1, 2, 5, TransferFlags::empty()),
                transfer(200 + round, 2, 3, 1, TransferFlags::PENDING),
            ],
        )
        .await;
        assert!(results.iter().all(|r| r.is_success()), "{results:?}");
    }
    let before = lookup_accounts(&mut client, &[1, 2, 3]).await;
    drop(client);
    node.shutdown().await.unwrap();

    let node = Node::start(config(dir.path(), checkpoint_bytes)).await.unwrap();
    let mut client = connect(&node).await;
    assert_eq!(lookup_accounts(&mut client, &[1, 2, 3]).await, before);
    // Ids stay unique across the restart.
    let again =
        create_transfers(&mut client, &[transfer(105, 1, 2, 5, TransferFlags::empty())]).await;
    assert_eq!(again, [settle_ledger::CreateTransferResult::Exists]);
    drop(client);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_survives_a_restart() {
    survives_restart(1 << 30).await;
}

#[tokio::test]
async fn state_survives_a_restart_with_a_checkpoint_after_every_group() {
    survives_restart(1).await;
}

/// A checkpoint refers to the records already in `transfers.0`: it stays small, a
/// start adopts the records after verifying them, and a damaged one refuses the start
/// (naming the file and the chunk) without changing anything.
#[tokio::test]
async fn a_checkpoint_refers_to_the_transfers_file_and_a_start_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), 64 << 10)).await.unwrap();
    let mut client = connect(&node).await;
    let reply =
        client.create_accounts(convert::accounts_request(&[account(1), account(2)])).await.unwrap();
    assert_eq!(reply.get_ref().results, vec![0, 0]);
    // 9,000 transfers: 8,192 of them go to the file (128 chunks of 64).
    for batch in 0..9u128 {
        let transfers: Vec<Transfer> = (0..1000)
            .map(|i| transfer(1 + batch * 1000 + i, 1, 2, 1, TransferFlags::empty()))
            .collect();
        let results = create_transfers(&mut client, &transfers).await;
        assert!(results.iter().all(|r| r.is_success()));
    }
    let before = lookup_accounts(&mut client, &[1, 2]).await;
    drop(client);
    // Stopping writes a checkpoint of everything.
    node.shutdown().await.unwrap();
    let file = dir.path().join("transfers.0");
    let good = std::fs::read(&file).unwrap();
    let checkpoint = std::fs::metadata(dir.path().join("checkpoint")).unwrap().len();
    // The 808 records after the chunks are copied, the chunks referred to (24 bytes
    // each): far less than the file's 8,192 records.
    assert!(checkpoint * 4 < good.len() as u64, "{checkpoint} vs {} bytes", good.len());

    let mut damaged = good.clone();
    damaged[100] ^= 0x08;
    std::fs::write(&file, &damaged).unwrap();
    let error = Node::start(config(dir.path(), 64 << 10)).await.err().expect("refused");
    let message = error.to_string();
    assert!(message.contains("transfers.0") && message.contains("chunk 0"), "{message}");
    assert_eq!(std::fs::read(&file).unwrap(), damaged);
    // A missing file refuses the start too, and the start leaves none behind.
    std::fs::remove_file(&file).unwrap();
    let error = Node::start(config(dir.path(), 64 << 10)).await.err().expect("refused");
    assert!(error.to_string().contains("transfers.0"), "{error}");
    assert!(!file.exists(), "a refused start made no transfers file");

    std::fs::write(&file, &good).unwrap();
    let node = Node::start(config(dir.path(), 64 << 10)).await.unwrap();
    let mut client = connect(&node).await;
    assert_eq!(lookup_accounts(&mut client, &[1, 2]).await, before);
    // Records of an adopted chunk, at the last chunk's edge, and after the chunks.
    let ids = [5u128, 8192, 8193, 9000];
    let request = pb::LookupRequest { ids: convert::ids_to_pb(&ids) };
    let found = client.lookup_transfers(request).await.unwrap();
    let found: Vec<Transfer> =
        found.get_ref().transfers.iter().map(|x| Transfer::try_from(x).unwrap()).collect();
    assert_eq!(found.iter().map(|t| (t.id, t.amount)).collect::<Vec<_>>(), ids.map(|id| (id, 1)));
    let again =
        create_transfers(&mut client, &[transfer(5, 1, 2, 1, TransferFlags::empty())]).await;
    assert_eq!(again, [settle_ledger::CreateTransferResult::Exists]);
    drop(client);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_refused_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), 1 << 30)).await.unwrap();
    let mut client = connect(&node).await;
    let invalid =
        |status: tonic::Status| assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");

    // Too many events.
    let many = vec![transfer(1, 1, 2, 1, TransferFlags::empty()); 8190];
    invalid(client.create_transfers(convert::transfers_request_packed(&many)).await.unwrap_err());
    // Both forms at once.
    let mut both = convert::transfers_request(&[transfer(1, 1, 2, 1, TransferFlags::empty())]);
    both.packed =
        convert::encode_packed_transfers(&[transfer(2, 1, 2, 1, TransferFlags::empty())]).into();
    invalid(client.create_transfers(both).await.unwrap_err());
    // A packed batch that is not whole records.
    let ragged = pb::CreateTransfersRequest { transfers: Vec::new(), packed: vec![0; 130].into() };
    invalid(client.create_transfers(ragged).await.unwrap_err());
    // A code that does not fit the ledger's u16.
    let mut wide = pb::Account::from(&account(7));
    wide.code = 70_000;
    invalid(
        client
            .create_accounts(pb::CreateAccountsRequest {
                accounts: vec![wide],
                packed: Default::default(),
            })
            .await
            .unwrap_err(),
    );
    // Too many ids.
    let ids = convert::ids_to_pb(&vec![1u128; 8190]);
    invalid(client.lookup_accounts(pb::LookupRequest { ids }).await.unwrap_err());

    // Raw garbage on the port: the connection is dropped, the node is unharmed.
    let mut raw = tokio::net::TcpStream::connect(node.local_addr()).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff\xfe garbage garbage").await.unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink).await;

    // Nothing above changed anything, and the node still serves.
    let reply = client.create_accounts(convert::accounts_request(&[account(1)])).await.unwrap();
    assert_eq!(reply.get_ref().results, vec![0]);
    assert_eq!(
        lookup_accounts(&mut client, &[1, 7]).await,
        vec![Account {
            timestamp: lookup_accounts(&mut client, &[1]).await[0].timestamp,
            ..account(1)
        }]
    );
    drop(client);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_second_node_cannot_take_the_same_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), 1 << 30)).await.unwrap();
    match Node::start(config(dir.path(), 1 << 30)).await {
        Err(NodeError::Locked { .. }) => {}
        other => panic!("expected Locked, got {:?}", other.map(|n| n.local_addr())),
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_operation_gets_unimplemented_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), 1 << 30)).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/settle.v1.Ledger/Teleport");
    let codec = tonic_prost::ProstCodec::<pb::LookupRequest, pb::AccountsReply>::default();
    let status = grpc
        .unary(tonic::Request::new(pb::LookupRequest { ids: Vec::new() }), path, codec)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status}");

    let mut client = connect(&node).await;
    assert!(lookup_accounts(&mut client, &[1]).await.is_empty());
    drop(client);
    node.shutdown().await.unwrap();
}
