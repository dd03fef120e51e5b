//! The spec file as written: a serde mirror of `bets/NN_slug.toml`.
//!
//! Every field here is documented in `bets/README.md` (a test keeps the two in
//! sync). Unknown keys are errors. Nothing in this module is trusted until
//! [`super::validate`] has checked it against the experiment's declarations.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::table::Value;

/// A bet specification, as parsed from its TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// Catalogue number 1..=99, or a replication-study number 101..=999;
    /// the file name must start with it (at least two digits).
    pub number: u32,
    /// Kebab-case identifier; the file name is `NN_<slug with _>.toml`.
    pub slug: String,
    /// One line for tables and reports.
    pub title: String,
    /// The catalogue section the bet belongs to.
    pub section: Section,
    /// What is claimed, in prose, fixed before anything runs.
    pub hypothesis: String,
    /// What kind of claim this is; `personalisation` requires a control.
    pub claim: Claim,
    /// Bets whose results this one builds on.
    #[serde(default)]
    pub depends_on: Vec<u32>,
    /// Bets whose headline this one confirms or retracts (e.g. 62 reads 37).
    #[serde(default)]
    pub tests_headline_of: Vec<u32>,
    /// The experiment kind and its parameters.
    pub procedure: Procedure,
    /// Replication grid: factor name -> values; every combination is a cell.
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Negative controls this bet must be read next to: name -> bet.
    #[serde(default)]
    pub controls: BTreeMap<String, Control>,
    /// Per-profile overrides of grid factors and procedure parameters.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileOverride>,
    /// Named quantities: SQL over the `cells` table giving one scalar.
    pub quantities: BTreeMap<String, String>,
    /// Quantities read off a clock (timing ratios): no two runs give the
    /// same bits, so `bets regress` shows them but compares neither them nor
    /// the verdict of a criterion that reads them. Registered with the bet.
    #[serde(default)]
    pub measured: Vec<String>,
    /// The registered criteria, SQL boolean expressions over the quantities.
    pub criteria: Criteria,
    /// Plots to draw in the bundle (a default is drawn when empty).
    #[serde(default)]
    pub plots: Vec<PlotSpec>,
    /// Free text for readers; not part of the registered hash.
    #[serde(default)]
    pub notes: Option<String>,
}

/// Catalogue sections (CATALOGUE.md's headings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    Foundations,
    Contrarian,
    PerUserAdapters,
    Federated,
    WireFormat,
    ValidityControls,
    Falsifications,
    OperatingLayer,
    OpenQuestions,
    /// Our own study of why a replication disagrees with the original
    /// (numbers 101 and up, not in the catalogue).
    Replication,
}

/// The nature of a claim, which decides what a reader must check next to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Claim {
    /// An adapter learns something about *this* user: needs a negative control.
    Personalisation,
    /// A property of a mechanism (routing, aggregation, quantisation).
    Mechanism,
    /// A property of the operating layer (ledgers, gossip, logs).
    Infrastructure,
    /// A control: measures the floor other claims are read against.
    Control,
    /// A bet about other bets' results (confirmation / retraction).
    Meta,
}

/// `[procedure]`: the experiment kind plus its own parameters (flattened).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Procedure {
    /// An experiment kind from `bets list --experiments`.
    pub experiment: String,
    /// Every other key is a parameter of that experiment.
    #[serde(flatten)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub params: toml::Table,
}

/// A declared negative control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The bet number that measures the control.
    pub bet: u32,
}

/// Overrides for one profile (`tiny`, `small` or `paper`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileOverride {
    /// Factor -> values replacing the top-level grid's.
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Parameter -> value replacing the top-level procedure's.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub procedure: toml::Table,
}

/// `[criteria]`: decided in the order catastrophic, strict, lenient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    /// Holds => STRICT (unless catastrophic holds).
    pub strict: String,
    /// Holds => LENIENT when strict does not.
    #[serde(default)]
    pub lenient: Option<String>,
    /// Holds => CATASTROPHIC, whatever else holds.
    #[serde(default)]
    pub catastrophic: Option<String>,
}

/// One plot: by default metric `y` per value of factor `x`, one point per
/// cell; `kind` selects a heat map or a win grid instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlotSpec {
    /// `points` (default), `heatmap` (median `y` per `series` row and `x`
    /// column: a confusion matrix) or `win-grid` (per `series` x `x` cell, `y`
    /// of `arms[1]` minus `y` of `arms[0]`, matched on every other factor).
    #[serde(default)]
    pub kind: PlotKind,
    /// For `win-grid`: the factor that names the arms.
    #[serde(default)]
    pub by: Option<String>,
    /// For `win-grid`: the two arms compared, `[challenger, reference]`.
    #[serde(default)]
    pub arms: Vec<String>,
    /// A factor (or metric) for the horizontal axis.
    pub x: String,
    /// A metric for the vertical axis.
    pub y: String,
    /// A factor that colours the points.
    #[serde(default)]
    pub series: Option<String>,
    /// Logarithmic vertical axis.
    #[serde(default)]
    pub log_y: bool,
    /// For `points`: a labelled horizontal line at this value of `y` (a
    /// criterion's threshold, a quorum), so a reader sees each cell against
    /// the line it is judged by.
    #[serde(default)]
    pub reference: Option<f64>,
    /// The reference line's label (default: "reference = <value>").
    #[serde(default)]
    pub reference_label: Option<String>,
    /// Plot title (default: "<y> by <x>").
    #[serde(default)]
    pub title: Option<String>,
}

/// What a plot draws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlotKind {
    #[default]
    Points,
    Heatmap,
    WinGrid,
}

/// The keys `SpecFile` accepts at top level (checked before typed parsing so
/// that every unknown key is reported at once).
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "number",
    "slug",
    "title",
    "section",
    "hypothesis",
    "claim",
    "depends_on",
    "tests_headline_of",
    "procedure",
    "grid",
    "controls",
    "profiles",
    "quantities",
    "measured",
    "criteria",
    "plots",
    "notes",
];

/// Profile names a spec may override (`small` is the default profile).
pub const PROFILES: &[&str] = &crate::engine::config::PROFILE_NAMES;
