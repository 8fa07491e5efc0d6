//! The classic Keras text classifier, in rnnlab:
//!
//! ```text
//! Embedding(vocab 10000, dim 256, mask_zero) → Bidirectional(LSTM 64, return_sequences)
//! → Dropout(0.5) → LSTM(32) → Dropout(0.5) → Dense(10, softmax)
//! ```
//! built from layers that each have their forward and backward side by side and an f64
//! gradient check. Shapes, used everywhere here: T = timesteps, B = batch, V = vocabulary,
//! E = embedding size, H = units of a recurrent layer, D = features of an activation,
//! C = classes. Activations are time-major, (T, B, D), like the cells in [`crate::cell`];
//! token ids are (T, B) `u32`, 0 = padding.
//!
//! Reading order: [`embedding`] → [`recurrent`] (padding mask, Bidirectional,
//! return_sequences over [`crate::cell`], whose masking is [`crate::cell::mask`]) →
//! [`dropout`] → [`dense`] → [`model`] (the stack a TOML file describes, Keras' init, one
//! forward/backward) → [`gradcheck`] → [`data`] (the synthetic task, the tokenizer, CSV
//! files) → [`fit`] (Keras' `model.fit`) → [`config`], [`cli`], [`command`] (`rnnlab fit`) →
//! [`experiment`] (`rnnlab experiment seed-classifier`) → [`checkpoint`], [`bench`](mod@bench).
//! The recurrent cells themselves live in [`crate::cell`]; nothing here touches the
//! `adding`/`copy` tasks or their `Model`.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod command;
pub mod config;
pub mod data;
pub mod dense;
pub mod dropout;
pub mod embedding;
pub mod experiment;
pub mod fit;
pub mod gradcheck;
pub mod model;
pub mod recurrent;

/// The cells whose recurrence supports masked steps (`mask_zero`): all of them.
pub const MASKED_CELLS: [crate::params::CellKind; 4] = crate::params::CellKind::ALL;
