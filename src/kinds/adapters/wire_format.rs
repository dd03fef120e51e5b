//! Kind `wire-format`: the production wire format (bets 13, 52, 53). A
//! cell evaluates one held-out text on one form of the base (float, or
//! ternary with per-row or per-tensor scales) with no adapter, a float
//! norm-only adapter trained on that base, or the same adapter sent as
//! int8, and reports the bytes each form takes on the wire next to its
//! perplexity.

use std::collections::BTreeMap;

use kernels::ternary::ScaleGranularity;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Budget, GENERAL, Slice, Workbench};
use crate::data::Split;
use crate::engine::eval::evaluate;
use crate::engine::int8::{Int8Adapter, Int8Encoding};
use crate::engine::ternary::{linear_prefixes, quant_tag};
use crate::fsutil::sha256_hex;
use crate::kinds::{Cell, Env, Kind, ParamProblem};
use crate::services::BaseModels;

/// The `wire-format` kind.
pub struct WireFormat;

/// The form a base takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BaseForm {
    /// The float (f32) base as pre-trained.
    Float,
    /// Every linear ternary with one absmean scale per output row.
    Ternary,
    /// Every linear ternary with one absmean scale per tensor.
    TernaryPerTensor,
}

impl BaseForm {
    /// The name the grid gives this form.
    pub fn name(self) -> &'static str {
        match self {
            BaseForm::Float => "float",
            BaseForm::Ternary => "ternary",
            BaseForm::TernaryPerTensor => "ternary-per-tensor",
        }
    }
}

/// The form an adapter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterForm {
    /// No adapter: the bare base.
    None,
    /// A norm-only adapter in f32, trained on the cell's base.
    Float,
    /// The same adapter sent as int8 (its change to the base's gains, one
    /// scale per tensor) and decoded at load.
    Int8,
    /// The same adapter's gains themselves quantised to int8 (the naive
    /// encoding; see `engine::int8`).
    Int8Absolute,
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the adapter's data order (irrelevant without an adapter).
    seed: u64,
    /// Which form of the base.
    base: BaseForm,
    /// Which form of the adapter.
    adapter: AdapterForm,
    /// Whose held-out text: a user, or `general` (the base's own held-out text, in three slices).
    user: String,
    /// Held-out slice A, B or C (of the general held-out text too).
    slice: Slice,
}

crate::metrics! {
    /// What one evaluation measured, and the bytes of what was evaluated.
    pub struct WireMetrics {
        /// Held-out perplexity per byte.
        pub ppl: f64,
        /// Held-out bits per byte.
        pub bpb: f64,
        /// The same base form without adapter on the same text.
        pub bare_ppl: f64,
        /// 1 - ppl / bare_ppl: what the adapter gains (0 without one).
        pub gain: f64,
        /// The float base without adapter on the same text.
        pub float_ppl: f64,
        /// ppl / float_ppl.
        pub ratio_to_float: f64,
        /// Bytes of the base file (float safetensors, or the packed ternary file).
        pub base_bytes: u64,
        /// Bytes of the linear weights alone (f32, or packed words and scales).
        pub linear_bytes: u64,
        /// Bytes of the float base file divided by this base's.
        pub size_ratio: f64,
        /// Bytes of the adapter file (0 without one).
        pub adapter_bytes: u64,
        /// base_bytes + adapter_bytes: what a user downloads.
        pub total_bytes: u64,
        /// Mean training cross-entropy of the adapter's last 10 steps (NaN without one).
        pub train_loss: f64,
        /// Bytes predicted in the held-out evaluation.
        pub eval_bytes: u64,
    }
}

/// One base form with its workbench and sizes.
pub struct Form {
    bench: Workbench,
    base_bytes: u64,
    linear_bytes: u64,
    quant_tag: String,
}

/// What every cell shares: each base form's workbench.
pub struct Wire {
    forms: BTreeMap<BaseForm, Form>,
}

impl Wire {
    fn form(&self, f: BaseForm) -> &Form {
        &self.forms[&f]
    }
}

impl Kind for WireFormat {
    const NAME: &'static str = "wire-format";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Evaluate the float or ternary base, bare or with a float or int8 norm-only adapter, with the bytes of each on the wire.";
    type Params = Budget;
    type Factors = Factors;
    type Metrics = WireMetrics;
    type Ready = Wire;

    fn check(budget: &Budget) -> Result<(), ParamProblem> {
        budget.check()
    }

    fn prepare(budget: &Budget, env: &Env) -> anyhow::Result<Wire> {
        let float = Workbench::new(budget.clone(), env)?;
        let store = BaseModels::new(env.paths.models_dir());
        let linears: usize = linear_prefixes(&float.base.config)
            .iter()
            .map(|p| float.base.weights[&format!("{p}.weight")].elem_count())
            .sum();
        let mut forms = BTreeMap::new();
        for (form, g) in
            [(BaseForm::Ternary, ScaleGranularity::PerRow), (BaseForm::TernaryPerTensor, ScaleGranularity::PerTensor)]
        {
            let (base, file) = store.ternary(&float.base, g)?;
            let linear_bytes = base.ternary.iter().flat_map(|m| m.values()).map(|t| t.packed_bytes()).sum::<usize>();
            let quant_tag = quant_tag(g, &base.hash);
            let bench = float.on_base(base);
            forms.insert(
                form,
                Form { bench, base_bytes: file.len() as u64, linear_bytes: linear_bytes as u64, quant_tag },
            );
        }
        let base_bytes = float.base.weights_bytes()?.len() as u64;
        forms.insert(
            BaseForm::Float,
            Form { bench: float, base_bytes, linear_bytes: 4 * linears as u64, quant_tag: "f32".into() },
        );
        Ok(Wire { forms })
    }

    fn inputs(w: &Wire) -> BTreeMap<String, String> {
        let float = &w.form(BaseForm::Float).bench;
        let mut inputs = float.inputs();
        for s in [Split::A, Split::B, Split::C] {
            inputs.insert(format!("{GENERAL}/{}", s.name()), sha256_hex(&float.corpus.general_eval_slice(s)));
        }
        for (form, f) in &w.forms {
            if *form != BaseForm::Float {
                inputs.insert(format!("{}_base", form.name()), f.quant_tag.clone());
            }
        }
        inputs
    }

    fn run(w: &Wire, _cell: &Cell, f: Factors) -> anyhow::Result<WireMetrics> {
        let form = w.form(f.base);
        let wb = &form.bench;
        let slice = f.slice.split();
        if f.user == GENERAL && f.adapter != AdapterForm::None {
            anyhow::bail!("factor `adapter`: an adapter belongs to a user, not to the general text");
        }
        let text = wb.held_out(&f.user, slice)?;
        let bare = |bench: &Workbench| bench.base_eval(&f.user, slice);
        let (eval, adapter_bytes, train_loss) = match f.adapter {
            AdapterForm::None => (bare(wb)?, 0, f64::NAN),
            AdapterForm::Float | AdapterForm::Int8 | AdapterForm::Int8Absolute => {
                let trained = wb.adapter("norm-only", &f.user, "real", f.seed)?;
                let encoding = match f.adapter {
                    AdapterForm::Int8Absolute => Some(Int8Encoding::Absolute),
                    AdapterForm::Int8 => Some(Int8Encoding::Delta),
                    _ => None,
                };
                let (adapter, bytes) = match encoding {
                    None => ((*trained.adapter).clone(), trained.bytes),
                    Some(enc) => {
                        // Sent as int8: encoded, decoded from the file's bytes, applied.
                        let file = Int8Adapter::quantize(&trained.adapter, &wb.base, enc)?.to_bytes()?;
                        (Int8Adapter::from_bytes(&file)?.to_adapter(&wb.base)?, file.len() as u64)
                    }
                };
                (evaluate(&wb.base, Some(&adapter), &text, &wb.eval_cfg())?, bytes, trained.stats.final_loss)
            }
        };
        let bare_ppl = bare(wb)?.ppl;
        let float = w.form(BaseForm::Float);
        let float_ppl = bare(&float.bench)?.ppl;
        Ok(WireMetrics {
            ppl: eval.ppl,
            bpb: eval.bpb,
            bare_ppl,
            gain: 1.0 - eval.ppl / bare_ppl,
            float_ppl,
            ratio_to_float: eval.ppl / float_ppl,
            base_bytes: form.base_bytes,
            linear_bytes: form.linear_bytes,
            size_ratio: float.base_bytes as f64 / form.base_bytes as f64,
            adapter_bytes,
            total_bytes: form.base_bytes + adapter_bytes,
            train_loss,
            eval_bytes: eval.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::testing::{cell, prepare};
    use crate::table::Value;

    fn at(base: &str, adapter: &str, user: &str) -> crate::kinds::Cell {
        cell(&[
            ("seed", Value::Int(0)),
            ("base", Value::Str(base.into())),
            ("adapter", Value::Str(adapter.into())),
            ("user", Value::Str(user.into())),
            ("slice", Value::Str("A".into())),
        ])
    }

    #[test]
    fn forms_report_their_bytes_and_the_int8_adapter_keeps_close_to_the_float_one() {
        let ready = prepare("wire-format", "eval_bytes = 2048\nsteps = 5\nlr = 1e-2");
        let float = ready.run_cell(&at("float", "none", "general")).unwrap();
        let tern = ready.run_cell(&at("ternary", "none", "general")).unwrap();
        assert_eq!(float["ratio_to_float"].as_f64(), Some(1.0));
        assert_eq!(float["size_ratio"].as_f64(), Some(1.0));
        assert_eq!(float["gain"].as_f64(), Some(0.0));
        assert_ne!(tern["ppl"], float["ppl"], "the ternary base is another model");
        assert!(tern["size_ratio"].as_f64().unwrap() > 1.0);
        assert!(tern["linear_bytes"].as_f64().unwrap() * 10.0 < float["linear_bytes"].as_f64().unwrap());
        let adapted = ready.run_cell(&at("ternary", "float", "novelist")).unwrap();
        let int8 = ready.run_cell(&at("ternary", "int8", "novelist")).unwrap();
        assert!(adapted["adapter_bytes"].as_f64().unwrap() > int8["adapter_bytes"].as_f64().unwrap());
        assert_eq!(
            adapted["total_bytes"].as_f64().unwrap(),
            adapted["base_bytes"].as_f64().unwrap() + adapted["adapter_bytes"].as_f64().unwrap()
        );
        let (g, q) = (adapted["gain"].as_f64().unwrap(), int8["gain"].as_f64().unwrap());
        assert!(g != 0.0 && (g - q).abs() <= 0.1 * g.abs(), "float gain {g}, int8 gain {q}");
        // An adapter belongs to a user; a bad factor is a named error.
        let err = ready.run_cell(&at("float", "float", "general")).unwrap_err().to_string();
        assert!(err.contains("factor `adapter`"), "{err}");
    }

    #[test]
    fn catalogue_specs_run_at_tiny_and_plot() {
        for spec in ["13_ternary_base.toml", "52_ternary_norm_adapters.toml", "53_int8_adapter.toml"] {
            crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots(spec, "wire-format");
        }
    }
}
