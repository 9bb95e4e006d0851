//! [`Nodes`]: one channel per known node of the cluster, and which node requests go to.
//!
//! Only a cluster's leader executes requests. Every other node answers gRPC
//! `UNAVAILABLE`, with the leader's client address in the [`LEADER_KEY`] metadata entry
//! when it knows the leader. After an attempt fails transiently, the retry loop calls
//! [`Nodes::after_failure`], which moves the node in use:
//!
//! - to the node named by a leader hint, learning its address if it is new (at most
//!   [`MAX_KNOWN_NODES`] addresses are known, so a misbehaving server cannot make the
//!   client open connections without bound);
//! - otherwise (no hint, an unusable hint, a transport error, a timeout) to the next
//!   known node, round robin, so that a crashed node is left for one that is up.
//!
//! A node that is not the leader may also forward a write to the leader and answer
//! it, naming the leader in the same metadata entry; [`Nodes::after_forward`] then
//! moves the client there, so that its later requests skip the extra hop.
//!
//! The node in use is an index shared by every clone of a [`Client`](crate::Client),
//! changed only by compare-and-swap from the node an attempt used: when several
//! concurrent requests fail on the same node, the first to notice moves the client and
//! the others follow it instead of each moving it one node further.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use settle_proto::pb::admin_client::AdminClient;
use settle_proto::pb::ledger_client::LedgerClient;
use tonic::transport::{Channel, Endpoint};

use crate::ClientOptions;

/// The metadata key under which a node that is not the leader names the leader's client
/// address (`host:port`), on its `UNAVAILABLE` replies.
pub(crate) const LEADER_KEY: &str = "settle-leader";

/// Most addresses a client knows, given and learnt from leader hints together (or the
/// number given, if more were given: then none is learnt).
pub(crate) const MAX_KNOWN_NODES: usize = 16;

/// HTTP/2 flow-control window per stream and per connection: several full batches.
const HTTP2_WINDOW_BYTES: u32 = 16 << 20;

/// Largest reply the client accepts. A full batch of looked-up accounts is about
/// 1.4 MB on the wire; this leaves room without being unbounded.
const MAX_DECODING_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// `"127.0.0.1:3000"` → `"http://127.0.0.1:3000"`; an address with a scheme is kept.
pub(crate) fn endpoint_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// The endpoint of one node, with the settings every channel uses.
pub(crate) fn endpoint(
    address: &str,
    options: &ClientOptions,
) -> Result<Endpoint, tonic::transport::Error> {
    // A full batch is about 1 MiB: with HTTP/2's default 64 KiB windows it would crawl
    // through many window-update round trips, so open the windows wide.
    Ok(Endpoint::from_shared(endpoint_uri(address))?
        .connect_timeout(options.request_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(HTTP2_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_WINDOW_BYTES))
}

/// The leader's address named by a failed attempt's status, if any.
pub(crate) fn leader_hint(status: &tonic::Status) -> Option<&str> {
    metadata_hint(status.metadata())
}

/// The leader a reply's or refusal's metadata names, if any.
pub(crate) fn metadata_hint(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    let hint = metadata.get(LEADER_KEY)?.to_str().ok()?.trim();
    (!hint.is_empty()).then_some(hint)
}

/// One known node.
#[derive(Debug)]
pub(crate) struct Node {
    /// As given to `connect`, or as named by a leader hint.
    pub(crate) address: String,
    /// `endpoint_uri(address)`: recognizes a hint naming a known node in another
    /// spelling (`host:port` for `http://host:port`).
    uri: String,
    /// The gRPC client over this node's channel (cheap to clone).
    pub(crate) grpc: LedgerClient<Channel>,
    /// The operator service, over the same channel.
    pub(crate) admin: AdminClient<Channel>,
    /// Until when (ms since `Nodes::epoch`) this node counts as unreachable: a leader
    /// hint naming it is then not followed (a replica cut off from the group, or
    /// removed from it, may keep naming a leader that is down).
    suspect_until_ms: AtomicU64,
}

impl Node {
    pub(crate) fn new(address: &str, channel: Channel) -> Node {
        Node {
            address: address.to_string(),
            uri: endpoint_uri(address),
            admin: AdminClient::new(channel.clone()),
            suspect_until_ms: AtomicU64::new(0),
            grpc: LedgerClient::new(channel).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        }
    }
}

/// The known nodes and the one in use; shared (in an `Arc`) by a client's clones.
///
/// Append-only: a node, once known, stays at its index, so `&Node` borrowed from here
/// stays valid (which lets [`Client::connected_address`](crate::Client::connected_address)
/// return a `&str`).
pub(crate) struct Nodes {
    /// `slots[..len]` are set; the others are free for learnt addresses.
    slots: Box<[OnceLock<Node>]>,
    /// Known nodes. Only grows, under `adding`, after the new slot is set.
    len: AtomicUsize,
    /// Index of the node in use (always `< len`).
    current: AtomicUsize,
    /// Serializes learning addresses, so one address is not learnt twice.
    adding: Mutex<()>,
    /// For the endpoints of learnt addresses.
    options: ClientOptions,
    /// The origin of the nodes' `suspect_until_ms`.
    epoch: Instant,
}

/// How long a node that did not answer stays suspect (see `Node::suspect_until_ms`).
pub(crate) const SUSPECT_MS: u64 = 2_000;

impl Nodes {
    /// `nodes` (at least one), starting with `nodes[current]`.
    pub(crate) fn new(nodes: Vec<Node>, current: usize, options: ClientOptions) -> Nodes {
        assert!(current < nodes.len(), "node {current} of {}", nodes.len());
        let len = nodes.len();
        let slots: Box<[OnceLock<Node>]> =
            (0..len.max(MAX_KNOWN_NODES)).map(|_| OnceLock::new()).collect();
        for (slot, node) in slots.iter().zip(nodes) {
            let _ = slot.set(node);
        }
        Nodes {
            slots,
            len: AtomicUsize::new(len),
            current: AtomicUsize::new(current),
            adding: Mutex::new(()),
            options,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn node(&self, index: usize) -> &Node {
        self.slots[index].get().expect("the slots of known nodes are set")
    }

    pub(crate) fn known(&self) -> impl Iterator<Item = &Node> {
        self.slots[..self.len.load(Ordering::Acquire)].iter().filter_map(OnceLock::get)
    }

    /// The node in use and its index (to pass back to [`Nodes::after_failure`]).
    pub(crate) fn current(&self) -> (usize, &Node) {
        let index = self.current.load(Ordering::Acquire);
        (index, self.node(index))
    }

    /// Every known address: the given ones, then the learnt ones.
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> Vec<&str> {
        self.known().map(|node| node.address.as_str()).collect()
    }

    /// After an attempt on node `used` failed transiently, with `hint` the leader it
    /// named (if any): moves away from `used` unless another request already did.
    /// Returns whether this follows a hint to another node (then the caller retries
    /// promptly); `false` if it rotated to the next node or stayed (the hint names
    /// `used` itself, or `used` is the only node).
    ///
    /// `unreachable` says the node did not answer at all (transport error, timeout): it
    /// is then suspect for [`SUSPECT_MS`], and hints naming it are not followed.
    pub(crate) fn after_failure(&self, used: usize, hint: Option<&str>, unreachable: bool) -> bool {
        if unreachable {
            self.mark_suspect(used);
        }
        if let Some(hint) = hint {
            match self.find_or_learn(hint) {
                Some(leader) if leader == used => return false,
                Some(leader) if self.follow(used, leader) => return true,
                _ => {}
            }
        }
        let next = (used + 1) % self.len.load(Ordering::Acquire);
        self.move_from(used, next);
        false
    }

    /// Node `index` did not answer: it is suspect for [`SUSPECT_MS`].
    pub(crate) fn mark_suspect(&self, index: usize) {
        let until = self.now_ms() + SUSPECT_MS;
        self.node(index).suspect_until_ms.store(until, Ordering::Release);
    }

    /// Whether node `index` did not answer within the last [`SUSPECT_MS`].
    pub(crate) fn suspect(&self, index: usize) -> bool {
        self.node(index).suspect_until_ms.load(Ordering::Acquire) > self.now_ms()
    }

    /// After a request to node `used` succeeded through it, naming in `hint` the leader
    /// it forwarded to: sends the next requests there (unless the hint names `used`, or
    /// a node that just did not answer).
    pub(crate) fn after_forward(&self, used: usize, hint: &str) {
        if let Some(leader) = self.find_or_learn(hint).filter(|&leader| leader != used) {
            self.follow(used, leader);
        }
    }

    /// Moves from `used` to `leader` unless `leader` is suspect; whether it did.
    fn follow(&self, used: usize, leader: usize) -> bool {
        if self.node(leader).suspect_until_ms.load(Ordering::Acquire) > self.now_ms() {
            tracing::debug!(
                hint = %self.node(leader).address,
                "not following a hint to a node that just did not answer"
            );
            return false;
        }
        self.move_from(used, leader);
        tracing::debug!(
            from = %self.node(used).address,
            to = %self.node(leader).address,
            "following the leader"
        );
        true
    }

    fn move_from(&self, used: usize, to: usize) {
        let _ = self.current.compare_exchange(used, to, Ordering::AcqRel, Ordering::Acquire);
    }

    fn find(&self, uri: &str) -> Option<usize> {
        self.known().position(|node| node.uri == uri)
    }

    /// The index of the node at `address`, learning it if it is new. `None` if it is
    /// new but not a valid address, or no more addresses can be learnt.
    pub(crate) fn find_or_learn(&self, address: &str) -> Option<usize> {
        let uri = endpoint_uri(address);
        if let Some(index) = self.find(&uri) {
            return Some(index);
        }
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = self.find(&uri) {
            return Some(index);
        }
        let len = self.len.load(Ordering::Acquire);
        if len == self.slots.len() {
            tracing::warn!(
                leader = address,
                known = len,
                "ignoring a leader hint: too many addresses known already"
            );
            return None;
        }
        let endpoint = match endpoint(address, &self.options) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::warn!(leader = address, error = %e, "ignoring an invalid leader hint");
                return None;
            }
        };
        let _ = self.slots[len].set(Node::new(address, endpoint.connect_lazy()));
        self.len.store(len + 1, Ordering::Release);
        Some(len)
    }

    /// Nodes at `addresses` (valid, none connected), starting with the first.
    #[cfg(test)]
    pub(crate) fn lazy(addresses: &[&str], options: ClientOptions) -> Nodes {
        let nodes = addresses
            .iter()
            .map(|address| Node::new(address, endpoint(address, &options).unwrap().connect_lazy()))
            .collect();
        Nodes::new(nodes, 0, options)
    }
}

impl fmt::Debug for Nodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nodes")
            .field("addresses", &self.known().map(|node| &node.address).collect::<Vec<_>>())
            .field("current", &self.current.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with_hint(hint: &str) -> tonic::Status {
        let mut status = tonic::Status::unavailable("not the leader");
        status.metadata_mut().insert(LEADER_KEY, hint.parse().unwrap());
        status
    }

    #[test]
    fn addresses_without_scheme_get_http() {
        assert_eq!(endpoint_uri("127.0.0.1:3000"), "http://127.0.0.1:3000");
        assert_eq!(endpoint_uri("http://node-1:3000"), "http://node-1:3000");
        assert_eq!(endpoint_uri("https://node-1:3000"), "https://node-1:3000");
    }

    #[test]
    fn leader_hints_are_read_from_metadata() {
        assert_eq!(leader_hint(&status_with_hint("127.0.0.1:3001")), Some("127.0.0.1:3001"));
        assert_eq!(leader_hint(&status_with_hint(" ")), None);
        assert_eq!(leader_hint(&tonic::Status::unavailable("no leader")), None);
    }

    #[tokio::test]
    async fn hints_move_to_known_or_learnt_nodes_and_failures_rotate() {
        let nodes = Nodes::lazy(&["127.0.0.1:1", "http://127.0.0.1:2"], ClientOptions::default());
        assert_eq!(nodes.current().1.address, "127.0.0.1:1");

        // A hint naming a known node in another spelling moves there.
        assert!(nodes.after_failure(0, Some("127.0.0.1:2"), false));
        assert_eq!(nodes.current().0, 1);
        assert_eq!(nodes.addresses(), ["127.0.0.1:1", "http://127.0.0.1:2"]);

        // A new address is learnt.
        assert!(nodes.after_failure(1, Some("127.0.0.1:3"), false));
        assert_eq!(nodes.current().0, 2);
        assert_eq!(nodes.current().1.address, "127.0.0.1:3");

        // No hint: the next node, round robin.
        assert!(!nodes.after_failure(2, None, false));
        assert_eq!(nodes.current().0, 0);

        // A hint naming the node that failed: stay there.
        assert!(!nodes.after_failure(0, Some("http://127.0.0.1:1"), false));
        assert_eq!(nodes.current().0, 0);

        // An invalid hint counts as none.
        assert!(!nodes.after_failure(0, Some("not a uri"), false));
        assert_eq!(nodes.current().0, 1);
        assert_eq!(nodes.addresses().len(), 3);
    }

    #[tokio::test]
    async fn a_hint_naming_a_node_that_did_not_answer_is_not_followed() {
        let nodes =
            Nodes::lazy(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], ClientOptions::default());
        // Node 0 does not answer: the client moves on to node 1...
        assert!(!nodes.after_failure(0, None, true));
        assert_eq!(nodes.current().0, 1);
        // ...which (cut off, or removed from the group) still names node 0 as leader:
        // the client goes round to node 2 instead of back to node 0.
        assert!(!nodes.after_failure(1, Some("127.0.0.1:1"), false));
        assert_eq!(nodes.current().0, 2);
        // A node that answered (even with a refusal) is not suspect: its hint is followed.
        assert!(nodes.after_failure(2, Some("127.0.0.1:2"), false));
        assert_eq!(nodes.current().0, 1);
    }

    #[tokio::test]
    async fn a_stale_failure_does_not_move_the_client_again() {
        let nodes =
            Nodes::lazy(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], ClientOptions::default());
        // Two requests failed on node 0: the first moves the client to node 1, the
        // second finds it moved already and leaves it there.
        assert!(!nodes.after_failure(0, None, false));
        assert!(!nodes.after_failure(0, None, false));
        assert_eq!(nodes.current().0, 1);
        assert!(nodes.after_failure(0, Some("127.0.0.1:3"), false));
        assert_eq!(nodes.current().0, 1);
    }

    #[tokio::test]
    async fn learnt_addresses_are_bounded() {
        let nodes = Nodes::lazy(&["127.0.0.1:1"], ClientOptions::default());
        for port in 2..=MAX_KNOWN_NODES {
            let (used, _) = nodes.current();
            assert!(nodes.after_failure(used, Some(&format!("127.0.0.1:{port}")), false));
        }
        assert_eq!(nodes.addresses().len(), MAX_KNOWN_NODES);
        assert_eq!(nodes.current().0, MAX_KNOWN_NODES - 1);

        // Full: a new address is not learnt, and the client rotates instead.
        assert!(!nodes.after_failure(MAX_KNOWN_NODES - 1, Some("127.0.0.1:100"), false));
        assert_eq!(nodes.addresses().len(), MAX_KNOWN_NODES);
        assert_eq!(nodes.current().0, 0);
        // Known addresses are still followed.
        assert!(nodes.after_failure(0, Some("127.0.0.1:5"), false));
        assert_eq!(nodes.current().1.address, "127.0.0.1:5");
    }
}
