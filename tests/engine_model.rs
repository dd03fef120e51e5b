//! Correctness of the engine on the `tiny` profile: gradients reach every
//! trainable tensor, frozen weights stay frozen, LoRA starts at the base,
//! routing is top-1, runs are deterministic and adapters round-trip.

use std::collections::BTreeMap;

use bets::engine::adapter::{Adapter, Trainable};
use bets::engine::base::BaseModel;
use bets::engine::config::{ModelConfig, Profile};
use bets::engine::eval::{EvalConfig, evaluate, evaluate_mixture};
use bets::engine::model::{LoraTarget, View, argmax_rows, gain_names};
use bets::engine::ops;
use bets::engine::train::{Batcher, TrainConfig, finetune};
use bets::engine::{EngineError, model};
use candle_core::{Device, Tensor, Var};

const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog. the quick brown fox jumps over the lazy dog. \
pack my box with five dozen liquor jugs. how vexingly quick daft zebras jump! sphinx of black quartz, judge my vow.";

fn tiny() -> ModelConfig {
    Profile::from_name("tiny").unwrap().model
}

fn base() -> BaseModel {
    BaseModel::random(&tiny(), 7, &Device::Cpu).unwrap()
}

fn cfg(steps: usize) -> TrainConfig {
    TrainConfig { lr: 3e-3, steps, batch: 4, seq: 32, seed: 11, warmup: 2, threads: 2, ..Default::default() }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

fn all_lora() -> Trainable {
    Trainable::Lora {
        rank: 2,
        targets: vec![LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O, LoraTarget::Ffn],
    }
}

/// Gradients of one batch's loss for the tensors `kind` trains.
fn grads_for(kind: &Trainable) -> BTreeMap<String, f32> {
    let base = base();
    let (adapter, _) = finetune(&base, kind.clone(), TEXT, &cfg(0)).unwrap();
    // Make B non-zero so A's gradient is not zero by construction of LoRA.
    let vars: BTreeMap<String, Var> = adapter
        .tensors
        .iter()
        .map(|(n, t)| {
            let t = if n.ends_with("lora_b") { (t + 0.1).unwrap() } else { t.clone() };
            (n.clone(), Var::from_tensor(&t).unwrap())
        })
        .collect();
    let mut view = View::new(&base.config, &base.weights);
    for (n, v) in &vars {
        if matches!(kind, Trainable::Lora { .. }) {
            view.lora.insert(n.clone(), v.as_tensor().clone());
        } else {
            view.over.insert(n.clone(), v.as_tensor().clone());
        }
    }
    let mut b = Batcher::new(TEXT, 32, 3).unwrap();
    let (xs, ys) = b.next(8, &Device::Cpu).unwrap();
    let fwd = view.forward(&xs).unwrap();
    let loss = ops::cross_entropy(&fwd.logits, &ys.flatten_all().unwrap()).unwrap().mean_all().unwrap();
    let loss = (loss + fwd.aux.unwrap()).unwrap();
    let g = loss.backward().unwrap();
    vars.iter()
        .map(|(n, v)| {
            let norm = g.get(v.as_tensor()).map(|t| t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap());
            (n.clone(), norm.unwrap_or(0.0))
        })
        .collect()
}

#[test]
fn every_trainable_tensor_gets_a_nonzero_gradient() {
    for kind in [Trainable::Full, Trainable::NormOnly, all_lora()] {
        let g = grads_for(&kind);
        assert!(!g.is_empty());
        let zero: Vec<_> = g.iter().filter(|(_, v)| v.is_nan() || **v <= 0.0).map(|(n, _)| n.clone()).collect();
        assert!(zero.is_empty(), "{kind}: no gradient for {zero:?}");
    }
}

#[test]
fn norm_only_training_leaves_every_non_gain_weight_bit_identical() {
    let base = base();
    let before: BTreeMap<String, Vec<u32>> = base.weights.iter().map(|(n, t)| (n.clone(), bits(t))).collect();
    let (adapter, stats) = finetune(&base, Trainable::NormOnly, TEXT, &cfg(5)).unwrap();
    assert_eq!(stats.trainable_params, adapter.param_count());
    let gains = gain_names(&base.config);
    assert_eq!(adapter.tensors.keys().cloned().collect::<Vec<_>>(), gains);
    let view = adapter.view(&base);
    for (name, b) in &before {
        let now = bits(view.w(name).unwrap());
        if gains.contains(name) {
            assert_ne!(&now, b, "gain {name} did not train");
        } else {
            assert_eq!(&now, b, "{name} changed under norm-only training");
        }
        assert_eq!(&bits(&base.weights[name]), b, "base tensor {name} was modified");
    }
}

#[test]
fn lora_at_step_zero_gives_logits_identical_to_the_base() {
    let base = base();
    let (adapter, _) = finetune(&base, all_lora(), TEXT, &cfg(0)).unwrap();
    assert!(adapter.tensors.keys().any(|k| k.ends_with("lora_b")));
    let xs = model::tokens(&TEXT[..32], &Device::Cpu).unwrap();
    let a = View::new(&base.config, &base.weights).forward(&xs).unwrap().logits;
    let b = adapter.view(&base).forward(&xs).unwrap().logits;
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn the_tiny_model_overfits_a_short_text() {
    let base = base();
    let c = TrainConfig { lr: 1e-2, steps: 150, batch: 8, seq: 32, warmup: 10, weight_decay: 0.0, ..cfg(0) };
    let (adapter, stats) = finetune(&base, Trainable::Full, TEXT, &c).unwrap();
    assert!(stats.first_loss > 4.0, "starts near ln 256: {}", stats.first_loss);
    assert!(stats.final_loss < 0.6, "final training loss {}", stats.final_loss);
    let e = evaluate(&base, Some(&adapter), TEXT, &EvalConfig::default()).unwrap();
    assert!(e.bpb < 1.5, "bits per byte on the memorised text: {}", e.bpb);
}

#[test]
fn top1_routing_sends_each_token_to_its_argmax_expert() {
    let base = base();
    let view = View::new(&base.config, &base.weights);
    let h = Tensor::from_vec(model::normal_vec(20 * 32, 1.0, 5), (20, 32), &Device::Cpu).unwrap();
    let moe = view.moe("blocks.0", &h).unwrap();
    let (out, routes) = (moe.y, moe.routes);
    let logits = h.matmul(&base.weights["blocks.0.moe.router.weight"]).unwrap();
    assert_eq!(routes, argmax_rows(&logits).unwrap());
    assert!(routes.contains(&0) && routes.contains(&1), "both experts used: {routes:?}");
    let probs = candle_nn::ops::softmax(&logits, 1).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(moe.probs.unwrap().to_vec2::<f32>().unwrap(), probs, "the router probabilities an audit keeps");
    let out = out.to_vec2::<f32>().unwrap();
    for (i, &e) in routes.iter().enumerate() {
        let row = h.narrow(0, i, 1).unwrap();
        let want = view.expert("blocks.0", e as usize, &row).unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in out[i].iter().zip(&want[0]) {
            assert!((a - b * probs[i][e as usize]).abs() < 1e-5, "token {i}: {a} vs {}", b * probs[i][e as usize]);
        }
    }
}

#[test]
fn evaluation_reports_exp_of_the_mean_nll_of_every_byte() {
    let base = base();
    let text = &TEXT[..70]; // two full windows of 32 and one of 5
    let e = evaluate(&base, None, text, &EvalConfig { batch: 2, ..Default::default() }).unwrap();
    assert_eq!(e.bytes, 69);
    // The same figure by hand, one window at a time.
    let view = View::new(&base.config, &base.weights);
    let mut sum = 0f64;
    for (s, l) in [(0, 32), (32, 32), (64, 5)] {
        let xs = model::tokens(&text[s..s + l], &Device::Cpu).unwrap();
        let ys =
            Tensor::from_vec(text[s + 1..s + l + 1].iter().map(|&b| b as u32).collect::<Vec<_>>(), l, &Device::Cpu)
                .unwrap();
        let nll = ops::cross_entropy(&view.forward(&xs).unwrap().logits, &ys).unwrap().to_vec1::<f32>().unwrap();
        sum += nll.iter().map(|&x| x as f64).sum::<f64>();
    }
    let mean = sum / 69.0;
    assert!((e.nll - mean).abs() < 1e-5, "{} vs {mean}", e.nll);
    assert!((e.ppl - mean.exp()).abs() < 1e-4);
    assert!((e.bpb - mean / std::f64::consts::LN_2).abs() < 1e-5);
}

#[test]
fn a_mixture_of_one_model_equals_that_model_and_of_two_lies_between() {
    let base = base();
    let (a, _) = finetune(&base, Trainable::NormOnly, TEXT, &cfg(5)).unwrap();
    let ec = EvalConfig::default();
    let alone = evaluate(&base, Some(&a), TEXT, &ec).unwrap();
    let mix1 = evaluate_mixture(&base, &[Some(&a)], TEXT, &ec).unwrap();
    assert!((alone.nll - mix1.nll).abs() < 1e-9);
    let plain = evaluate(&base, None, TEXT, &ec).unwrap();
    let mix2 = evaluate_mixture(&base, &[Some(&a), None], TEXT, &ec).unwrap();
    // log of a mean of probabilities is at least the mean of the logs (Jensen) and at most the best + ln 2.
    assert!(mix2.nll <= (alone.nll + plain.nll) / 2.0 + 1e-9);
    assert!(mix2.nll <= alone.nll.min(plain.nll) + std::f64::consts::LN_2 + 1e-9);
}

#[test]
fn two_runs_with_the_same_seed_and_threads_are_bit_identical() {
    let base = base();
    let run = || {
        let (a, s) = finetune(&base, Trainable::Full, TEXT, &cfg(4)).unwrap();
        let e = evaluate(&base, Some(&a), TEXT, &EvalConfig { threads: 2, ..Default::default() }).unwrap();
        (a.to_bytes().unwrap(), s.losses.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), e.nll.to_bits())
    };
    assert_eq!(run(), run());
    let (other, _) = finetune(&base, Trainable::Full, TEXT, &TrainConfig { seed: 12, ..cfg(4) }).unwrap();
    assert_ne!(other.to_bytes().unwrap(), run().0, "another seed must give other weights");
}

#[test]
fn adapters_round_trip_bit_exactly_and_refuse_another_base() {
    let base = base();
    let dir = tempfile::tempdir().unwrap();
    for kind in [Trainable::NormOnly, Trainable::Lora { rank: 2, targets: vec![LoraTarget::Q, LoraTarget::V] }] {
        let (a, _) = finetune(&base, kind.clone(), TEXT, &cfg(2)).unwrap();
        let path = dir.path().join(format!("{}.safetensors", kind.to_string().replace([':', ','], "_")));
        let saved = a.to_bytes().unwrap();
        bets::fsutil::write_atomic(&path, &saved).unwrap();
        let n = saved.len() as u64;
        assert_eq!(n, std::fs::metadata(&path).unwrap().len());
        let back = Adapter::from_bytes(&std::fs::read(&path).unwrap(), &base).unwrap();
        assert_eq!(back.kind, kind);
        assert_eq!(back.to_bytes().unwrap(), std::fs::read(&path).unwrap());
        for (name, t) in &a.tensors {
            assert_eq!(bits(t), bits(&back.tensors[name]), "{name}");
        }
        let other = BaseModel::random(&tiny(), 8, &Device::Cpu).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert!(matches!(Adapter::from_bytes(&on_disk, &other), Err(EngineError::AdapterMismatch(_))));
    }
    // A norm-only adapter is the gains plus a small header.
    let (a, _) = finetune(&base, Trainable::NormOnly, TEXT, &cfg(0)).unwrap();
    let payload = 4 * a.param_count();
    let size = a.to_bytes().unwrap().len();
    assert!(size > payload && size <= payload + 512, "{size} bytes for {payload} bytes of gains");
}

#[test]
fn averaging_two_adapters_is_element_wise() {
    let base = base();
    let (a, _) = finetune(&base, Trainable::NormOnly, TEXT, &cfg(2)).unwrap();
    let (b, _) = finetune(&base, Trainable::NormOnly, TEXT, &TrainConfig { seed: 99, ..cfg(3) }).unwrap();
    let m = Adapter::average(&[&a, &b]).unwrap();
    for (n, t) in &m.tensors {
        let want = ((&a.tensors[n] + &b.tensors[n]).unwrap() / 2.0).unwrap();
        assert_eq!(bits(t), bits(&want));
    }
    let (l, _) = finetune(&base, all_lora(), TEXT, &cfg(0)).unwrap();
    assert!(Adapter::average(&[&a, &l]).is_err());
}

#[test]
fn argmax_rows_takes_the_first_of_equal_maxima_row_by_row() {
    let t = Tensor::from_vec(vec![1f32, 3.0, 3.0, -2.0, -1.0, -5.0, 0.0, 0.0, 0.0], (3, 3), &Device::Cpu).unwrap();
    assert_eq!(argmax_rows(&t).unwrap(), vec![1, 1, 0]);
    let empty = Tensor::zeros((2, 0), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(argmax_rows(&empty).unwrap(), vec![0, 0]);
    assert!(
        argmax_rows(&Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap()).is_err(),
        "a rank-1 tensor has no rows"
    );
}
