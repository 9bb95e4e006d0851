//! `settle.v1.Admin`: operator commands, handed to the engine.

use std::sync::mpsc::SyncSender;

use settle_proto::pb;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::engine::Input;
use crate::server::status_of;

pub struct AdminService {
    pub inbox: SyncSender<Input>,
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn change_replicas(
        &self,
        request: Request<pb::ChangeReplicasRequest>,
    ) -> Result<Response<pb::ChangeReplicasReply>, Status> {
        let pb::ChangeReplicasRequest { shard, node, remove } = request.into_inner();
        if shard == 0 || node == 0 {
            return Err(Status::invalid_argument("shard and node ids are not 0"));
        }
        let (reply, answer) = oneshot::channel();
        // Rare and small: a blocking send on the bounded inbox would only wait for the
        // engine to take one input.
        self.inbox
            .try_send(Input::ChangeReplicas { shard, node, remove, reply })
            .map_err(|_| Status::unavailable("the node is busy or stopping; retry"))?;
        let voters = answer
            .await
            .map_err(|_| Status::unavailable("the node stopped"))?
            .map_err(status_of)?;
        Ok(Response::new(pb::ChangeReplicasReply { voters }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .try_send(Input::Status { reply })
            .map_err(|_| Status::unavailable("the node is busy or stopping; retry"))?;
        let status = answer.await.map_err(|_| Status::unavailable("the node stopped"))?;
        Ok(Response::new(status))
    }
}
