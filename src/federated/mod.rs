//! Federated training (bets 41 and 44). So far: the byzantine-robust
//! aggregation rules ([`aggregate`]) and the attacks they face
//! ([`attack`]), pure functions over workers' update vectors; DiLoCo and
//! the federated workers are still to come.

pub mod aggregate;
pub mod attack;
