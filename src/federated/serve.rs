//! `bets federated-worker`: one replica ([`super::replica`]) served over
//! loopback TCP with the worker pipeline's request loop
//! ([`crate::workers::serve`]): numbered requests, a retransmitted number
//! answered from the stored reply (so a round is never trained twice), and
//! an exit when standard input closes.

use std::sync::Mutex;

use super::replica::Replica;
use super::wire::{FedReply, FedRequest};
use crate::workers::message::Wire;
use crate::workers::serve::Handler;

/// A replica behind a lock: one coordinator drives it, one request at a time.
pub struct FederatedWorker(pub Mutex<Replica>);

impl FederatedWorker {
    fn respond(&self, req: FedRequest) -> FedReply {
        let mut replica = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let done = match req {
            FedRequest::Hello => {
                Ok(FedReply::Ready { params: replica.param_count() as u64, shard_bytes: replica.shard_bytes() as u64 })
            }
            FedRequest::Round { k, params } => {
                replica.round(&params, k as usize).map(|t| FedReply::Trained { params: t.params, loss: t.loss })
            }
            FedRequest::Gradient { params } => {
                replica.gradient(&params).map(|g| FedReply::Gradient { grad: g.grad, loss: g.loss })
            }
        };
        done.unwrap_or_else(|e| FedReply::Error(format!("{e:#}")))
    }
}

impl Handler for FederatedWorker {
    type Session = ();

    fn session(&self) {}

    fn answer(&self, tag: u8, payload: &[u8], _: &mut ()) -> (u8, Vec<u8>) {
        match FedRequest::decode(tag, payload) {
            Ok(req) => self.respond(req),
            Err(e) => FedReply::Error(e.to_string()),
        }
        .encode()
    }

    fn error(&self, message: String) -> (u8, Vec<u8>) {
        FedReply::Error(message).encode()
    }
}
