//! The notification controller (`--controllers notification`): Flux's notification-controller
//! kinds in `notification.toolkit.fluxcd.io`. [`receiver`]: incoming webhooks (`Receiver` v1)
//! served by the process's HTTP server at `/hook/<digest>`, verified per sender type, each
//! requesting a reconcile of the Receiver's resources.

pub mod receiver;
