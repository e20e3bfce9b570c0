//! [`WorkQueueExec`]: the scoring workers take their batches from one short queue.
//!
//! Every partition of the input (the scan and the feature expressions) is drained by a task
//! of its own into one bounded queue, and each of the node's output partitions (one per
//! scoring worker) takes the next batch from it whenever it is ready for one. So a batch goes
//! to whichever worker is free, not to one chosen in advance, and reading stops while the
//! queue is full.
//!
//! Why not DataFusion's round-robin `RepartitionExec`: it deals batch `i` to output
//! `i mod n` whether that output is busy or not, and its per-output buffers are unbounded
//! while any output is empty. When one worker runs a little slower than the other (they
//! share two cores with the reading tasks), its buffer grows for as long as the run lasts:
//! peak memory grew with the input, and the faster worker idled at the end while the slower
//! one drained its backlog.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use datafusion::arrow::array::RecordBatch;
use datafusion::common::Result;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use tokio::sync::mpsc;

/// Hands the batches of every input partition to `workers` output partitions through one
/// queue of at most `capacity` batches.
#[derive(Debug)]
pub struct WorkQueueExec {
    input: Arc<dyn ExecutionPlan>,
    workers: usize,
    capacity: usize,
    /// The queue of the current execution, made by the first `execute` call and shared by
    /// the output streams; it (and its feeding tasks) ends when the last of them is dropped.
    queue: Mutex<Weak<SharedQueue>>,
    properties: Arc<PlanProperties>,
}

/// The receiving end of the queue and the tasks that feed it.
struct SharedQueue {
    /// One receiver for every worker: whoever holds the lock waits for the next batch.
    receiver: tokio::sync::Mutex<mpsc::Receiver<Result<RecordBatch>>>,
    /// Aborted when dropped, so that an abandoned run stops reading.
    _feeders: Vec<SpawnedTask<()>>,
}

impl WorkQueueExec {
    /// `workers` outputs (at least one), a queue of `capacity` batches (at least one).
    pub fn new(input: Arc<dyn ExecutionPlan>, workers: usize, capacity: usize) -> Self {
        let workers = workers.max(1);
        // The outputs take batches in no set order, so no ordering is promised across them.
        let mut eq_properties = input.equivalence_properties().clone();
        eq_properties.clear_orderings();
        eq_properties.clear_per_partition_constants();
        let properties = PlanProperties::new(
            eq_properties,
            Partitioning::UnknownPartitioning(workers),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Self {
            input,
            workers,
            capacity: capacity.max(1),
            queue: Mutex::new(Weak::new()),
            properties: Arc::new(properties),
        }
    }

    /// The running queue, started (its feeding tasks spawned) if no output holds one.
    fn queue(&self, context: &Arc<TaskContext>) -> Result<Arc<SharedQueue>> {
        let mut current = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = current.upgrade() {
            return Ok(queue);
        }
        let (sender, receiver) = mpsc::channel(self.capacity);
        let partitions = self.input.output_partitioning().partition_count();
        let mut feeders = Vec::with_capacity(partitions);
        for partition in 0..partitions {
            let mut stream = self.input.execute(partition, Arc::clone(context))?;
            let sender = sender.clone();
            feeders.push(SpawnedTask::spawn(async move {
                while let Some(batch) = stream.next().await {
                    let failed = batch.is_err();
                    // The receivers are gone: the run has ended or been abandoned.
                    if sender.send(batch).await.is_err() || failed {
                        break;
                    }
                }
            }));
        }
        let queue = Arc::new(SharedQueue {
            receiver: tokio::sync::Mutex::new(receiver),
            _feeders: feeders,
        });
        *current = Arc::downgrade(&queue);
        Ok(queue)
    }
}

impl DisplayAs for WorkQueueExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "WorkQueueExec: workers={}, capacity={}",
            self.workers, self.capacity
        )
    }
}

impl ExecutionPlan for WorkQueueExec {
    fn name(&self) -> &'static str {
        "WorkQueueExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return datafusion::common::internal_err!(
                "WorkQueueExec takes one input, not {}",
                children.len()
            );
        }
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            self.workers,
            self.capacity,
        )))
    }

    fn child_stats_requests(
        &self,
        _partition: Option<usize>,
    ) -> Vec<datafusion::physical_plan::statistics::ChildStats> {
        vec![datafusion::physical_plan::statistics::ChildStats::At(None)]
    }

    /// The whole input's statistics for the whole output (the progress bar's length); a
    /// single output's share is not known in advance.
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<datafusion::common::Statistics>],
        args: &datafusion::physical_plan::StatisticsArgs,
    ) -> Result<Arc<datafusion::common::Statistics>> {
        match (args.partition(), input_stats.first()) {
            (None, Some(stats)) => Ok(Arc::clone(stats)),
            _ => Ok(Arc::new(datafusion::common::Statistics::new_unknown(
                &self.schema(),
            ))),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.workers {
            return datafusion::common::internal_err!(
                "WorkQueueExec has {} outputs, not {}",
                self.workers,
                partition + 1
            );
        }
        let queue = self.queue(&context)?;
        let batches = futures::stream::unfold(queue, |queue| async move {
            let next = queue.receiver.lock().await.recv().await;
            next.map(|batch| (batch, queue))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
    use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};

    fn schema() -> SchemaRef {
        Arc::clone(shared_schema())
    }

    /// `PartitionStream::schema` lends a reference, so the inputs share one schema.
    fn shared_schema() -> &'static SchemaRef {
        static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(|| Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])))
    }

    /// An input partition of `batches` batches of `rows` rows, counting the batches read.
    #[derive(Debug)]
    struct CountedPartition {
        first: i64,
        batches: usize,
        rows: usize,
        read: Arc<AtomicUsize>,
    }

    impl PartitionStream for CountedPartition {
        fn schema(&self) -> &SchemaRef {
            shared_schema()
        }

        fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
            let (first, rows, read) = (self.first, self.rows, self.read.clone());
            let batches = futures::stream::iter(0..self.batches).map(move |b| {
                read.fetch_add(1, Ordering::SeqCst);
                let start = first + (b * rows) as i64;
                let values = Int64Array::from_iter_values(start..start + rows as i64);
                Ok(RecordBatch::try_new(schema(), vec![Arc::new(values)])?)
            });
            Box::pin(RecordBatchStreamAdapter::new(schema(), batches))
        }
    }

    /// Input partitions of (batches, rows per batch), numbered on from each other.
    fn input(parts: &[(usize, usize)], read: &Arc<AtomicUsize>) -> Arc<dyn ExecutionPlan> {
        let mut first = 0;
        let mut streams: Vec<Arc<dyn PartitionStream>> = Vec::new();
        for &(batches, rows) in parts {
            streams.push(Arc::new(CountedPartition {
                first,
                batches,
                rows,
                read: read.clone(),
            }));
            first += (batches * rows) as i64;
        }
        Arc::new(StreamingTableExec::try_new(schema(), streams, None, [], false, None).unwrap())
    }

    async fn values(stream: SendableRecordBatchStream) -> Vec<i64> {
        let batches: Vec<RecordBatch> = stream.map(|b| b.unwrap()).collect().await;
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[tokio::test]
    async fn a_batch_goes_to_whichever_worker_asks() {
        // Two input partitions of unequal size: a worker that is always free scores all of
        // both while the other takes nothing; no batch waits for a particular worker.
        let read = Arc::new(AtomicUsize::new(0));
        let exec = WorkQueueExec::new(input(&[(40, 50), (10, 50)], &read), 2, 2);
        let ctx = Arc::new(TaskContext::default());
        let busy = exec.execute(1, ctx.clone()).unwrap();
        let mut got = values(exec.execute(0, ctx).unwrap()).await;
        got.sort_unstable();
        assert_eq!(got, (0..2500).collect::<Vec<i64>>());
        drop(busy);
    }

    #[tokio::test]
    async fn each_worker_sees_one_partitions_batches_in_order() {
        // One ordered input partition (a query's ORDER BY): every worker's share is in order.
        let read = Arc::new(AtomicUsize::new(0));
        let exec = Arc::new(WorkQueueExec::new(input(&[(100, 10)], &read), 3, 2));
        let ctx = Arc::new(TaskContext::default());
        let tasks: Vec<_> = (0..3)
            .map(|p| tokio::spawn(values(exec.execute(p, ctx.clone()).unwrap())))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            let share = t.await.unwrap();
            assert!(share.is_sorted(), "{share:?}");
            all.extend(share);
        }
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<i64>>());
    }

    #[tokio::test]
    async fn reading_waits_while_the_queue_is_full() {
        // With nobody taking batches, the two feeding tasks read the queue's 3 batches and
        // one more each (held while they wait for room), not the 200 there are.
        let read = Arc::new(AtomicUsize::new(0));
        let exec = WorkQueueExec::new(input(&[(100, 10), (100, 10)], &read), 2, 3);
        let ctx = Arc::new(TaskContext::default());
        let mut idle = exec.execute(0, ctx).unwrap();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(read.load(Ordering::SeqCst), 5);
        // Taking one batch makes room for one more.
        assert_eq!(idle.next().await.unwrap().unwrap().num_rows(), 10);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(read.load(Ordering::SeqCst), 6);
        // Dropping the last output stops the reading for good.
        drop(idle);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(read.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn an_input_error_reaches_a_worker() {
        #[derive(Debug)]
        struct Failing;
        impl PartitionStream for Failing {
            fn schema(&self) -> &SchemaRef {
                shared_schema()
            }
            fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
                let failure = futures::stream::once(async {
                    datafusion::common::exec_err!("corrupt page in row group 3")
                });
                Box::pin(RecordBatchStreamAdapter::new(schema(), failure))
            }
        }
        let input = Arc::new(
            StreamingTableExec::try_new(
                schema(),
                vec![Arc::new(Failing) as _],
                None,
                [],
                false,
                None,
            )
            .unwrap(),
        );
        let exec = WorkQueueExec::new(input, 2, 2);
        let mut stream = exec.execute(0, Arc::new(TaskContext::default())).unwrap();
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(
            err.to_string().contains("corrupt page in row group 3"),
            "{err}"
        );
        assert!(stream.next().await.is_none());
    }
}
