//! rnnlab: an experiment harness that shows, with numbers and pictures, why a vanilla RNN
//! forgets and an LSTM remembers.
//!
//! Reading order: [`real`] (the float type) → [`params`] (named tensors) → [`cell`] (forward
//! and backward through time) → [`head`] and [`loss`] → [`model`] (the three composed) →
//! [`gradcheck`] (how every gradient is verified) → [`tasks`] → [`optim`] → [`train`].
//! [`seq`] builds the classic Keras text classifier from the same cells.

pub mod batch;
pub mod bench;
pub mod cell;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod experiment;
pub mod fpu;
pub mod fsutil;
pub mod gradcheck;
pub mod head;
pub mod init;
pub mod loss;
pub mod model;
pub mod optim;
pub mod params;
pub mod plot;
pub mod probe;
pub mod real;
pub mod report;
pub mod seq;
pub mod tasks;
pub mod train;
