//! The messages a federated coordinator and its workers exchange, in the
//! worker pipeline's frames ([`crate::workers::frame`]: versioned,
//! length-prefixed, checksummed). Tags 21.. and 121.. keep them apart from
//! the pipeline's, so a message sent to the wrong kind of worker is refused
//! by name rather than misread.
//!
//! Parameters and gradients travel as `u32` count then little-endian f32
//! values; a loss as an f64. Bytes on the wire are therefore 4 per
//! parameter each way per synchronisation, plus a 28-byte frame header and
//! a few bytes of fields.

use crate::workers::frame::HEADER_BYTES;
use crate::workers::message::{In, Out, PayloadError, Wire};

/// What a coordinator asks a federated worker.
#[derive(Debug, Clone, PartialEq)]
pub enum FedRequest {
    /// Who are you? Answered by [`FedReply::Ready`].
    Hello,
    /// DiLoCo: take `k` inner steps from `params`, answer the end parameters.
    Round { k: u32, params: Vec<f32> },
    /// Data parallelism: the gradient of the next batch at `params`.
    Gradient { params: Vec<f32> },
}

/// What a federated worker answers.
#[derive(Debug, Clone, PartialEq)]
pub enum FedReply {
    /// The size of the model the worker trains, and of its shard.
    Ready { params: u64, shard_bytes: u64 },
    /// The parameters a round ended on, and its mean inner loss.
    Trained { params: Vec<f32>, loss: f64 },
    /// A batch's flat gradient and loss.
    Gradient { grad: Vec<f32>, loss: f64 },
    /// The request failed; the connection stays usable.
    Error(String),
}

mod tag {
    pub const HELLO: u8 = 21;
    pub const ROUND: u8 = 22;
    pub const GRADIENT: u8 = 23;
    pub const READY: u8 = 121;
    pub const TRAINED: u8 = 122;
    pub const GRADIENT_REPLY: u8 = 123;
    pub const ERROR: u8 = 126;
}

fn vector(i: &mut In) -> Result<Vec<f32>, PayloadError> {
    let n = i.u32()? as usize;
    i.f32s(n)
}

/// Bytes of a frame carrying `payload` bytes.
pub fn frame_bytes(payload: usize) -> u64 {
    (HEADER_BYTES + payload) as u64
}

impl FedRequest {
    /// Bytes of this request's frame, without encoding it.
    pub fn wire_bytes(&self) -> u64 {
        frame_bytes(match self {
            FedRequest::Hello => 0,
            FedRequest::Round { params, .. } => 8 + 4 * params.len(),
            FedRequest::Gradient { params } => 4 + 4 * params.len(),
        })
    }
}

impl FedReply {
    /// Bytes of this reply's frame, without encoding it.
    pub fn wire_bytes(&self) -> u64 {
        match self {
            FedReply::Ready { .. } => frame_bytes(16),
            FedReply::Trained { params: v, .. } | FedReply::Gradient { grad: v, .. } => FedReply::vector_bytes(v.len()),
            FedReply::Error(m) => frame_bytes(4 + m.len()),
        }
    }

    /// Bytes of a [`FedReply::Trained`] or [`FedReply::Gradient`] frame of
    /// `n` values (count, values, loss).
    pub fn vector_bytes(n: usize) -> u64 {
        frame_bytes(12 + 4 * n)
    }

    /// What this reply is, in a few words (never its vectors).
    pub fn describe(&self) -> String {
        match self {
            FedReply::Ready { params, shard_bytes } => format!("ready ({params} parameters, {shard_bytes}-byte shard)"),
            FedReply::Trained { params, .. } => format!("trained parameters ({} values)", params.len()),
            FedReply::Gradient { grad, .. } => format!("a gradient ({} values)", grad.len()),
            FedReply::Error(m) => format!("an error: {m}"),
        }
    }
}

impl Wire for FedRequest {
    fn encode(&self) -> (u8, Vec<u8>) {
        let mut o = Out::default();
        let t = match self {
            FedRequest::Hello => tag::HELLO,
            FedRequest::Round { k, params } => {
                o.u32(*k).u32(params.len() as u32).f32s(params);
                tag::ROUND
            }
            FedRequest::Gradient { params } => {
                o.u32(params.len() as u32).f32s(params);
                tag::GRADIENT
            }
        };
        (t, o.0)
    }

    fn decode(t: u8, payload: &[u8]) -> Result<FedRequest, PayloadError> {
        let mut i = In { what: "federated request", rest: payload };
        let req = match t {
            tag::HELLO => FedRequest::Hello,
            tag::ROUND => {
                let k = i.u32()?;
                FedRequest::Round { k, params: vector(&mut i)? }
            }
            tag::GRADIENT => FedRequest::Gradient { params: vector(&mut i)? },
            other => return Err(i.err(format!("unknown tag {other}"))),
        };
        i.end(req)
    }
}

impl Wire for FedReply {
    fn encode(&self) -> (u8, Vec<u8>) {
        let mut o = Out::default();
        let t = match self {
            FedReply::Ready { params, shard_bytes } => {
                o.u64(*params).u64(*shard_bytes);
                tag::READY
            }
            FedReply::Trained { params, loss } => {
                o.u32(params.len() as u32).f32s(params).f64(*loss);
                tag::TRAINED
            }
            FedReply::Gradient { grad, loss } => {
                o.u32(grad.len() as u32).f32s(grad).f64(*loss);
                tag::GRADIENT_REPLY
            }
            FedReply::Error(m) => {
                o.bytes(m.as_bytes());
                tag::ERROR
            }
        };
        (t, o.0)
    }

    fn decode(t: u8, payload: &[u8]) -> Result<FedReply, PayloadError> {
        let mut i = In { what: "federated reply", rest: payload };
        let reply = match t {
            tag::READY => FedReply::Ready { params: i.u64()?, shard_bytes: i.u64()? },
            tag::TRAINED => {
                let params = vector(&mut i)?;
                FedReply::Trained { params, loss: i.f64()? }
            }
            tag::GRADIENT_REPLY => {
                let grad = vector(&mut i)?;
                FedReply::Gradient { grad, loss: i.f64()? }
            }
            tag::ERROR => FedReply::Error(String::from_utf8_lossy(&i.bytes()?).into_owned()),
            other => return Err(i.err(format!("unknown tag {other}"))),
        };
        i.end(reply)
    }

    fn refusal(&self) -> Option<&str> {
        match self {
            FedReply::Error(m) => Some(m),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_and_knows_its_size() {
        let reqs = [
            FedRequest::Hello,
            FedRequest::Round { k: 10, params: vec![1.0, -2.5, 3.25] },
            FedRequest::Gradient { params: vec![0.5; 7] },
        ];
        for r in reqs {
            let (t, p) = r.encode();
            assert_eq!(FedRequest::decode(t, &p).unwrap(), r);
            assert_eq!(r.wire_bytes(), frame_bytes(p.len()), "{r:?}");
        }
        let replies = [
            FedReply::Ready { params: 1_395_000, shard_bytes: 42 },
            FedReply::Trained { params: vec![1.0, 2.0], loss: 2.75 },
            FedReply::Gradient { grad: vec![-1.0; 5], loss: 0.125 },
            FedReply::Error("no".into()),
        ];
        for r in replies {
            let (t, p) = r.encode();
            assert_eq!(FedReply::decode(t, &p).unwrap(), r);
            assert_eq!(r.wire_bytes(), frame_bytes(p.len()), "{r:?}");
        }
    }

    #[test]
    fn short_long_and_foreign_payloads_are_refused() {
        let (t, mut p) = FedRequest::Round { k: 1, params: vec![1.0, 2.0] }.encode();
        assert!(FedRequest::decode(t, &p[..p.len() - 1]).unwrap_err().to_string().contains("more bytes"));
        p.push(0);
        assert!(FedRequest::decode(t, &p).unwrap_err().to_string().contains("left over"));
        // A pipeline request (tag 1, Hello) is not a federated one.
        assert!(FedRequest::decode(1, &[]).unwrap_err().to_string().contains("unknown tag 1"));
    }
}
