//! The multi-raft network: every group between two nodes shares one gRPC channel (HTTP/2
//! multiplexes them), and every request names its group.
//!
//! Client side: [`Peers`] keeps one channel per peer address; [`GroupNetwork`] is openraft's
//! network factory for one group. Server side: [`Router`] maps group ids to the local Raft
//! instances and serves `strata.v1.internal.Raft`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, Raft, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strata_proto::calls::{is_compressed, read_request, respond, unary_call};
use strata_proto::frames::body_with_batches_last;
use strata_proto::internal::raft_client::RaftClient;
use strata_proto::internal::raft_server::{Raft as RaftService, RaftServer};
use strata_proto::internal::{RaftBatchesRequest, RaftReply, RaftRequest};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::controller::{MetaCommand, MetaResult};
use crate::types::{
    CONTROLLER_GROUP, ControllerTc, DetachBytes, GroupId, Node, NodeId, PartitionTc,
};

/// Largest replication message: a 64 MiB batch plus framing.
pub const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

/// One lazily connected channel per peer address, shared by every group.
#[derive(Debug, Default)]
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    pub fn new() -> Arc<Peers> {
        Arc::new(Peers::default())
    }

    /// The channel to `addr` (`host:port`), connecting on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(1))
            .http2_keep_alive_interval(std::time::Duration::from_secs(5))
            .keep_alive_timeout(std::time::Duration::from_secs(5))
            .initial_stream_window_size(8 * 1024 * 1024)
            .initial_connection_window_size(32 * 1024 * 1024)
            .max_frame_size(strata_proto::CLIENT_MAX_FRAME_BYTES)
            .connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// The client for `addr`, on its shared channel.
    pub fn client(&self, addr: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
        Ok(raft_client(self.channel(addr)?))
    }
}

fn raft_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, postcard::Error> {
    postcard::to_stdvec(value).map(Bytes::from)
}

/// openraft's network factory for one group.
#[derive(Debug)]
pub struct GroupNetwork<C> {
    peers: Arc<Peers>,
    group: GroupId,
    _tc: PhantomData<fn() -> C>,
}

impl<C> GroupNetwork<C> {
    pub fn new(peers: Arc<Peers>, group: GroupId) -> Self {
        GroupNetwork { peers, group, _tc: PhantomData }
    }
}

/// A connection of one group to one peer.
#[derive(Debug)]
pub struct GroupClient<C> {
    channel: Option<Channel>,
    addr: String,
    target: NodeId,
    group: GroupId,
    _tc: PhantomData<fn() -> C>,
}

impl<C> RaftNetworkFactory<C> for GroupNetwork<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node>,
    GroupClient<C>: RaftNetwork<C>,
{
    type Network = GroupClient<C>;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> GroupClient<C> {
        GroupClient {
            channel: self.peers.channel(&node.addr).ok(),
            addr: node.addr.clone(),
            target,
            group: self.group,
            _tc: PhantomData,
        }
    }
}

#[derive(Debug)]
enum Call {
    Append,
    /// AppendEntries whose normal entries' batches were taken out, in entry order.
    AppendBatches(Vec<Bytes>),
    Vote,
    Snapshot,
}

/// Takes the batch out of every normal entry, in order (see [`DetachBytes`]).
fn detach_batches<C>(entries: &mut [openraft::Entry<C>]) -> Vec<Bytes>
where
    C: RaftTypeConfig,
    C::D: DetachBytes,
{
    let mut batches = Vec::new();
    for entry in entries {
        if let EntryPayload::Normal(data) = &mut entry.payload
            && let Some(batch) = data.detach()
        {
            batches.push(batch);
        }
    }
    batches
}

/// Puts each batch back into its normal entry; every entry must get one and every batch must
/// find one.
fn attach_batches<C>(entries: &mut [openraft::Entry<C>], batches: Vec<Bytes>) -> Result<(), Status>
where
    C: RaftTypeConfig,
    C::D: DetachBytes,
{
    let mut batches = batches.into_iter();
    for entry in entries {
        if let EntryPayload::Normal(data) = &mut entry.payload {
            let batch = batches.next().ok_or_else(|| {
                Status::invalid_argument("AppendBatches has fewer batches than normal entries")
            })?;
            data.attach(batch);
        }
    }
    match batches.next() {
        Some(_) => {
            Err(Status::invalid_argument("AppendBatches has more batches than normal entries"))
        }
        None => Ok(()),
    }
}

impl<C> GroupClient<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node>,
{
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Call,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(channel) = self.channel.clone() else {
            let err = std::io::Error::other(format!("bad peer address {}", self.addr));
            return Err(RPCError::Unreachable(Unreachable::new(&err)));
        };
        let mut client = raft_client(channel.clone());
        let payload = encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        fn timed<T>(message: T, option: &RPCOption) -> Request<T> {
            let mut request = Request::new(message);
            request.set_timeout(option.hard_ttl());
            request
        }
        let group_id = self.group;
        let plain = |payload| timed(RaftRequest { group_id, payload }, option);
        let reply = match kind {
            Call::Append => client.append_entries(plain(payload)).await,
            Call::AppendBatches(batches) => {
                // The batches as they are, in frames of their own when large (see
                // `RaftFrames`): not copied into one request buffer by tonic.
                let head = RaftBatchesRequest { group_id, payload, batches: Vec::new() };
                match body_with_batches_last(&head, BATCHES_TAG, &batches) {
                    Ok(body) => {
                        let call =
                            unary_call(channel, APPEND_BATCHES_PATH, body, MAX_MESSAGE_BYTES);
                        match tokio::time::timeout(option.hard_ttl(), call).await {
                            Ok(answer) => answer.map(Response::new),
                            Err(_) => Err(Status::deadline_exceeded("raft request timed out")),
                        }
                    }
                    Err(status) => Err(status),
                }
            }
            Call::Vote => client.vote(plain(payload)).await,
            Call::Snapshot => client.install_snapshot(plain(payload)).await,
        };
        let reply = reply.map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&reply.into_inner().payload)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl<C> RaftNetwork<C> for GroupClient<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = openraft::Entry<C>>,
    C::D: DetachBytes,
    AppendEntriesRequest<C>: Serialize,
    InstallSnapshotRequest<C>: Serialize,
{
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let batches = detach_batches(&mut rpc.entries);
        let kind = if batches.is_empty() { Call::Append } else { Call::AppendBatches(batches) };
        self.call(kind, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Call::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(Call::Vote, &rpc, &option).await
    }
}

/// A local Raft instance the router can hand requests to.
#[derive(Clone)]
pub enum GroupHandle {
    Controller(Raft<ControllerTc>),
    Partition(Raft<PartitionTc>),
}

impl Debug for GroupHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupHandle::Controller(_) => f.write_str("Controller"),
            GroupHandle::Partition(_) => f.write_str("Partition"),
        }
    }
}

/// The local groups by id, served to peers.
#[derive(Debug, Default)]
pub struct Router {
    groups: RwLock<HashMap<GroupId, GroupHandle>>,
}

impl Router {
    pub fn new() -> Arc<Router> {
        Arc::new(Router::default())
    }

    pub fn register(&self, group: GroupId, handle: GroupHandle) {
        self.groups.write().unwrap_or_else(|e| e.into_inner()).insert(group, handle);
    }

    /// The local partition groups.
    pub fn partition_groups(&self) -> Vec<(GroupId, Raft<PartitionTc>)> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(id, handle)| match handle {
                GroupHandle::Partition(raft) => Some((*id, raft.clone())),
                GroupHandle::Controller(_) => None,
            })
            .collect()
    }

    /// The controller group, once registered.
    pub fn controller(&self) -> Option<Raft<ControllerTc>> {
        match self.groups.read().unwrap_or_else(|e| e.into_inner()).get(&CONTROLLER_GROUP) {
            Some(GroupHandle::Controller(raft)) => Some(raft.clone()),
            _ => None,
        }
    }

    pub fn unregister(&self, group: GroupId) {
        self.groups.write().unwrap_or_else(|e| e.into_inner()).remove(&group);
    }

    fn group(&self, id: GroupId) -> Result<GroupHandle, Status> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("raft group {id} is not on this node")))
    }

    /// The gRPC service over this router.
    pub fn service(self: &Arc<Self>) -> RaftFrames {
        let service = RouterService(self.clone());
        let tonic = RaftServer::new(service.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        RaftFrames { tonic, service }
    }
}

const APPEND_BATCHES_PATH: &str = "/strata.v1.internal.Raft/AppendBatches";
/// The tag of `RaftBatchesRequest.batches` (`proto/strata/v1/internal.proto`).
const BATCHES_TAG: u32 = 3;

/// `strata.v1.internal.Raft`, with `AppendBatches` read from the request's HTTP/2 frames
/// (`strata_proto::frames`): a follower's batches reach its log as slices of what the socket
/// delivered, where tonic copied each into its buffer, and again when growing it. Every other
/// call goes to tonic.
#[derive(Debug, Clone)]
pub struct RaftFrames {
    tonic: RaftServer<RouterService>,
    service: RouterService,
}

impl tonic::server::NamedService for RaftFrames {
    const NAME: &'static str = strata_proto::internal::raft_server::SERVICE_NAME;
}

impl Service<http::Request<Body>> for RaftFrames {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != APPEND_BATCHES_PATH || is_compressed(&request) {
            return self.tonic.call(request);
        }
        let service = self.service.clone();
        Box::pin(async move {
            Ok(match read_request(request, MAX_MESSAGE_BYTES).await {
                Ok(request) => respond(service.append_batches(request).await),
                Err(refusal) => refusal,
            })
        })
    }
}

/// `strata.v1.internal.Raft` over a [`Router`].
#[derive(Debug, Clone)]
pub struct RouterService(Arc<Router>);

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftReply>, Status> {
    let payload = encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply { payload }))
}

impl RouterService {
    fn controller(&self) -> Result<Raft<ControllerTc>, Status> {
        self.0.controller().ok_or_else(|| Status::unavailable("the controller is not running here"))
    }
}

#[tonic::async_trait]
impl RaftService for RouterService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        match self.0.group(request.group_id)? {
            GroupHandle::Controller(raft) => {
                reply(&raft.append_entries(decode(&request.payload)?).await)
            }
            GroupHandle::Partition(raft) => {
                reply(&raft.append_entries(decode(&request.payload)?).await)
            }
        }
    }

    async fn append_batches(
        &self,
        request: Request<RaftBatchesRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let RaftBatchesRequest { group_id, payload, batches } = request.into_inner();
        match self.0.group(group_id)? {
            GroupHandle::Partition(raft) => {
                let mut rpc: AppendEntriesRequest<PartitionTc> = decode(&payload)?;
                attach_batches(&mut rpc.entries, batches)?;
                reply(&raft.append_entries(rpc).await)
            }
            GroupHandle::Controller(_) => {
                Err(Status::invalid_argument("the controller's entries carry no batches"))
            }
        }
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let rpc: VoteRequest<NodeId> = decode(&request.payload)?;
        match self.0.group(request.group_id)? {
            GroupHandle::Controller(raft) => reply(&raft.vote(rpc).await),
            GroupHandle::Partition(raft) => reply(&raft.vote(rpc).await),
        }
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        match self.0.group(request.group_id)? {
            GroupHandle::Controller(raft) => {
                reply(&raft.install_snapshot(decode(&request.payload)?).await)
            }
            GroupHandle::Partition(raft) => {
                reply(&raft.install_snapshot(decode(&request.payload)?).await)
            }
        }
    }

    async fn ping(&self, _request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Ok(Response::new(RaftReply::default()))
    }

    async fn change_nodes(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let raft = self.controller()?;
        let change = decode(&request.into_inner().payload)?;
        match crate::node::change_nodes_here(&raft, change).await {
            Ok(result) => reply::<MetaResult>(&result),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn forward_meta(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let raft = self.controller()?;
        let command: MetaCommand = decode(&request.into_inner().payload)?;
        match raft.client_write(command).await {
            Ok(response) => reply::<MetaResult>(&response.data),
            Err(e) => Err(Status::unavailable(format!("not the controller leader: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::{CommittedLeaderId, Entry, LogId};

    use super::*;
    use crate::types::Batch;

    fn entry(index: u64, payload: EntryPayload<PartitionTc>) -> Entry<PartitionTc> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload }
    }

    fn normal(bytes: &'static [u8]) -> EntryPayload<PartitionTc> {
        EntryPayload::Normal(Batch(Bytes::from_static(bytes)))
    }

    #[test]
    fn batches_travel_beside_the_payload_and_come_back_in_order() {
        let membership = openraft::Membership::new(vec![BTreeSet::from([1, 2, 3])], None);
        let mut entries = vec![
            entry(1, EntryPayload::Blank),
            entry(2, normal(b"first-batch")),
            entry(3, EntryPayload::Membership(membership)),
            entry(4, normal(b"second-batch")),
        ];
        let original = format!("{entries:?}");
        let batches = detach_batches(&mut entries);
        assert_eq!(batches, [&b"first-batch"[..], &b"second-batch"[..]]);
        // What postcard encodes no longer holds the batches.
        let wire = postcard::to_stdvec(&entries).unwrap();
        assert!(!wire.windows(5).any(|w| w == b"batch"), "{wire:?}");
        let mut decoded: Vec<Entry<PartitionTc>> = postcard::from_bytes(&wire).unwrap();
        attach_batches(&mut decoded, batches.clone()).unwrap();
        assert_eq!(format!("{decoded:?}"), original);

        // Every normal entry needs a batch and every batch an entry.
        let mut short: Vec<Entry<PartitionTc>> = postcard::from_bytes(&wire).unwrap();
        let err = attach_batches(&mut short, batches[..1].to_vec()).unwrap_err();
        assert!(err.message().contains("fewer"), "{err:?}");
        let mut long: Vec<Entry<PartitionTc>> = postcard::from_bytes(&wire).unwrap();
        let mut extra = batches.clone();
        extra.push(Bytes::from_static(b"stray"));
        let err = attach_batches(&mut long, extra).unwrap_err();
        assert!(err.message().contains("more"), "{err:?}");
    }
}
