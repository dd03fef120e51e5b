//! Federated training (bets 41 and 44). So far: the byzantine-robust
//! aggregation rules ([`aggregate`]), pure functions over workers' update
//! vectors; DiLoCo, the workers and the attack models are still to come.

pub mod aggregate;
