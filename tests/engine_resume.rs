//! Resumable training: N steps in one go equal k steps, a save of the
//! trained tensors and the optimiser state to bytes, a load, and N - k more
//! steps, bit for bit; state of another run is refused by name.

use bets::engine::adapter::{Adapter, Trainable};
use bets::engine::base::BaseModel;
use bets::engine::config::{ModelConfig, Profile};
use bets::engine::model::LoraTarget;
use bets::engine::optim::{AdamW, OptimStateError};
use bets::engine::train::{TrainConfig, finetune, finetune_resume, train_full, train_full_resume};
use bets::engine::{EngineError, model};
use candle_core::Device;

const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog. the quick brown fox jumps over the lazy dog. \
pack my box with five dozen liquor jugs. how vexingly quick daft zebras jump! sphinx of black quartz, judge my vow.";

fn tiny() -> ModelConfig {
    Profile::from_name("tiny").unwrap().model
}

fn cfg(steps: usize) -> TrainConfig {
    TrainConfig { lr: 3e-3, steps, batch: 4, seq: 32, seed: 11, warmup: 2, threads: 2, ..Default::default() }
}

fn losses(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn a_finetune_stopped_saved_loaded_and_resumed_equals_one_uninterrupted_run() {
    let base = BaseModel::random(&tiny(), 7, &Device::Cpu).unwrap();
    let lora = Trainable::Lora { rank: 2, targets: vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Ffn] };
    let (n, k) = (7, 3);
    for kind in [Trainable::NormOnly, lora, Trainable::Full] {
        let c = cfg(n);
        let (one, one_stats) = finetune(&base, kind.clone(), TEXT, &c).unwrap();
        let (whole, whole_opt, _) = finetune_resume(&base, kind.clone(), TEXT, &c, None, n, &mut |_, _| {}).unwrap();
        assert_eq!(whole.to_bytes().unwrap(), one.to_bytes().unwrap(), "{kind}: finetune is a resume from nothing");
        let (part, opt, first) = finetune_resume(&base, kind.clone(), TEXT, &c, None, k, &mut |_, _| {}).unwrap();
        assert_eq!(opt.step_count(), k);
        // Everything goes through bytes, as between two processes.
        let (adapter_bytes, optim_bytes) = (part.to_bytes().unwrap(), opt.to_bytes().unwrap());
        let part = Adapter::from_bytes(&adapter_bytes, &base).unwrap();
        let opt = AdamW::from_bytes(&optim_bytes).unwrap();
        let mut seen = Vec::new();
        let (rest, rest_opt, second) =
            finetune_resume(&base, kind.clone(), TEXT, &c, Some((&part, opt)), n, &mut |s, _| seen.push(s)).unwrap();
        assert_eq!(seen, (k..n).collect::<Vec<_>>(), "{kind}: the resumed run takes the remaining steps");
        assert_eq!(rest.to_bytes().unwrap(), one.to_bytes().unwrap(), "{kind}: resumed adapter differs");
        assert_eq!(rest_opt.to_bytes().unwrap(), whole_opt.to_bytes().unwrap(), "{kind}: optimiser state differs");
        let mut both = first.losses.clone();
        both.extend(&second.losses);
        assert_eq!(losses(&both), losses(&one_stats.losses), "{kind}: losses differ");
        assert_eq!((first.steps, second.steps), (k, n - k));
    }
}

#[test]
fn pretraining_stopped_and_resumed_from_saved_weights_equals_one_run() {
    let cfg = TrainConfig { weight_decay: 0.1, ..cfg(6) };
    let init = model::init_weights(&tiny(), 3, &Device::Cpu).unwrap();
    let mut one = init.clone();
    let stats = train_full(&tiny(), &mut one, TEXT, &cfg, &Device::Cpu, &mut |_, _| {}).unwrap();
    let mut part = init.clone();
    let (_, opt) = train_full_resume(&tiny(), &mut part, TEXT, &cfg, None, 4, &Device::Cpu, &mut |_, _| {}).unwrap();
    let bytes = BaseModel::from_weights(tiny(), part, "x".into(), Device::Cpu).weights_bytes().unwrap();
    let mut resumed = BaseModel::from_bytes(tiny(), "x".into(), &bytes, &Device::Cpu).unwrap().weights;
    let opt = AdamW::from_bytes(&opt.to_bytes().unwrap()).unwrap();
    let (rest, _) =
        train_full_resume(&tiny(), &mut resumed, TEXT, &cfg, Some(opt), 6, &Device::Cpu, &mut |_, _| {}).unwrap();
    let as_bytes = |w| BaseModel::from_weights(tiny(), w, "x".into(), Device::Cpu).weights_bytes().unwrap();
    assert_eq!(as_bytes(resumed), as_bytes(one));
    assert_eq!(losses(&rest.losses), losses(&stats.losses[4..]));
}

#[test]
fn optimiser_state_of_another_run_is_a_named_error() {
    let base = BaseModel::random(&tiny(), 7, &Device::Cpu).unwrap();
    let (a, opt, _) = finetune_resume(&base, Trainable::NormOnly, TEXT, &cfg(4), None, 2, &mut |_, _| {}).unwrap();
    let other_lr = TrainConfig { lr: 1e-3, ..cfg(4) };
    let err = finetune_resume(&base, Trainable::NormOnly, TEXT, &other_lr, Some((&a, opt.clone())), 4, &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(err, EngineError::Optim(OptimStateError::Mismatch(_))), "{err}");
    let full = finetune(&base, Trainable::Full, TEXT, &cfg(0)).unwrap().0;
    let err =
        finetune_resume(&base, Trainable::Full, TEXT, &cfg(4), Some((&full, opt)), 4, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, EngineError::Optim(OptimStateError::Mismatch(_))), "{err}");
    assert!(matches!(AdamW::from_bytes(b"\x08\0\0\0\0\0\0\0{}"), Err(EngineError::Optim(_))));
}
