//! Federated training (bets 41 and 44): workers with their own data shard,
//! model replica and inner optimiser, driven by a coordinator over loopback
//! TCP or in this process.
//!
//! - [`aggregate`]: byzantine-robust aggregation rules (pure);
//! - [`attack`]: what byzantine workers send instead (pure, seeded);
//! - [`flat`]: a model's weights as one flat vector;
//! - [`shard`]: disjoint, seeded shards of the training text;
//! - [`replica`]: one worker's replica (inner rounds, gradients);
//! - [`wire`]: the coordinator-worker messages;
//! - [`serve`]: a replica behind `bets federated-worker`;
//! - [`fleet`]: the workers as the coordinator sees them (threads or processes);
//! - [`diloco`]: DiLoCo and synchronous data parallelism.

pub mod aggregate;
pub mod attack;
pub mod diloco;
pub mod flat;
pub mod fleet;
pub mod replica;
pub mod serve;
pub mod shard;
pub mod wire;

pub use diloco::{Byzantine, OnSync, Outcome, Outer, Plan, Rule, Synced, diloco, sync_data_parallel};
pub use flat::Layout;
pub use fleet::{Fleet, InProcess, Processes, Traffic};
pub use replica::{Job, Replica};
