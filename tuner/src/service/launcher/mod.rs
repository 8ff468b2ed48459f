//! Launchers start the service's workers through a cluster's scheduler;
//! they know nothing of training, only of the queue's demand.

pub mod slurm;
