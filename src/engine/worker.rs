//! The model worker: one OS thread that owns the encoder, forms each batch when it is free to
//! run one ([`super::batcher`]) and runs every forward pass, so inference never blocks a tokio
//! thread. Replies go back over each job's oneshot channel.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use super::batcher::Batches;
use super::fault::{panic_message, FaultHook};
use super::job::{Job, JobError, JobOutput};
use super::rate::DrainRate;
use crate::lifecycle::WorkerHeartbeat;
use crate::metrics::Metrics;
use crate::model::{Encoder, HeadOutput};

pub(super) fn run(
    encoder: Encoder,
    mut batches: Batches,
    heartbeat: Arc<WorkerHeartbeat>,
    metrics: Arc<Metrics>,
    drain_rate: Arc<DrainRate>,
    faults: Arc<FaultHook>,
) {
    // Engine::start marked the worker alive; this marks it dead however the thread ends,
    // panics included, so /health sees it.
    struct Alive(Arc<WorkerHeartbeat>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.set_alive(false);
        }
    }
    let _alive = Alive(heartbeat.clone());

    while let Some(jobs) = batches.next_batch() {
        let now = Instant::now();
        for job in &jobs {
            metrics
                .queue_duration
                .observe(now.duration_since(job.enqueued).as_secs_f64());
        }
        let longest = jobs.iter().map(Job::len).max().unwrap_or(0);
        metrics.batch_size.observe(jobs.len() as f64);
        metrics.batch_tokens.observe((jobs.len() * longest) as f64);
        metrics.batches_total.inc();
        metrics.inputs_total.inc_by(jobs.len() as u64);
        metrics.inputs_in_flight.set(jobs.len() as i64);

        faults.before_forward();
        heartbeat.batch_started();
        let started = Instant::now();
        let result = run_batch(&encoder, &jobs, &metrics, &faults);
        let ended = Instant::now();
        heartbeat.batch_finished();
        metrics.inputs_in_flight.set(0);
        metrics
            .inference_duration
            .observe(ended.duration_since(started).as_secs_f64());
        metrics.observe_busy(started, ended);
        drain_rate.record(jobs.len(), ended.duration_since(started));

        match result {
            Ok(outputs) => {
                let batch_size = jobs.len();
                for (job, output) in jobs.into_iter().zip(outputs) {
                    let _ = job.reply.send(Ok(JobOutput { output, batch_size }));
                }
            }
            Err(message) => {
                for job in jobs {
                    let _span = job.span.enter();
                    tracing::error!(error = %message, "inference failed");
                    let _ = job.reply.send(Err(JobError::Inference(message.clone())));
                }
            }
        }
    }
}

/// Runs one batch; a candle error or a panic inside the model becomes an error for this batch
/// only, and the worker carries on with the next. A panic is counted and logged here; the
/// clients get a generic 500.
fn run_batch(
    encoder: &Encoder,
    jobs: &[Job],
    metrics: &Metrics,
    faults: &FaultHook,
) -> Result<Vec<HeadOutput>, String> {
    let sequences: Vec<(&[u32], &[u32])> = jobs
        .iter()
        .map(|j| (j.ids.as_slice(), j.type_ids.as_slice()))
        .collect();
    let forward = || {
        faults.inside_forward();
        encoder.forward(&sequences)
    };
    match catch_unwind(AssertUnwindSafe(forward)) {
        Ok(Ok(outputs)) if outputs.len() == jobs.len() => Ok(outputs),
        Ok(Ok(outputs)) => Err(format!(
            "model returned {} outputs for {} inputs",
            outputs.len(),
            jobs.len()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(payload) => {
            metrics.model_panics_total.inc();
            tracing::error!(
                panic = %panic_message(payload.as_ref()),
                batch_size = jobs.len(),
                "a forward pass panicked: its batch fails, the model thread goes on"
            );
            Err("the model panicked".into())
        }
    }
}
