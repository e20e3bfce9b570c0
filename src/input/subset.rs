//! Scanning some of a Parquet input's units (one shard's): DataFusion's `ListingTable` plans
//! the scan as usual (projection, filters, partition pruning), then each file it would read
//! is kept only when it holds selected row groups, and then reads only those, through a
//! `ParquetAccessPlan`. Every row group is read by one partition at most, however DataFusion
//! later splits the files into byte ranges: a range reads the row groups whose middle it
//! holds, and only those the plan allows.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::{ListingTable, PartitionedFile};
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::WorkUnit;

/// The row groups to read of each file: its count of row groups, and the chosen ones.
type Selection = HashMap<String, (usize, Vec<usize>)>;

/// A Parquet table that reads only some of its row groups.
#[derive(Debug)]
pub(super) struct SubsetTable {
    inner: ListingTable,
    selected: Selection,
}

impl SubsetTable {
    /// `inner`, reading only `chosen` of `all` (the input's units, in listing order).
    pub fn new(inner: ListingTable, all: &[WorkUnit], chosen: &[WorkUnit]) -> Self {
        let mut selected: Selection = HashMap::new();
        for unit in all {
            selected.entry(unit.location.clone()).or_default().0 += 1;
        }
        for unit in chosen {
            if let (Some(entry), Some(group)) = (selected.get_mut(&unit.location), unit.row_group) {
                entry.1.push(group);
            }
        }
        selected.retain(|_, (_, groups)| !groups.is_empty());
        Self { inner, selected }
    }

    /// The scan `plan` (a `DataSourceExec` over Parquet files), reading only the selection.
    fn restrict(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(exec) = (plan.as_ref() as &dyn Any).downcast_ref::<DataSourceExec>() else {
            // An empty scan (every file pruned) reads nothing either way.
            return Ok(plan);
        };
        let source: &dyn Any = exec.data_source().as_ref();
        let Some(config) = source.downcast_ref::<FileScanConfig>() else {
            return Err(DataFusionError::Internal(format!(
                "a subset of row groups needs a file scan, not {}",
                plan.name()
            )));
        };
        // Every file once (DataFusion may have split it into ranges), in path order.
        let mut files: BTreeMap<String, PartitionedFile> = BTreeMap::new();
        for file in config.file_groups.iter().flat_map(|g| g.iter()) {
            let location = file.object_meta.location.to_string();
            let Some((count, groups)) = self.selected.get(&location) else {
                continue;
            };
            files.entry(location).or_insert_with(|| {
                let mut access = ParquetAccessPlan::new_none(*count);
                for &g in groups {
                    access.scan(g);
                }
                let mut file = file.clone();
                file.range = None;
                // The file's statistics count rows this scan does not read.
                file.statistics = None;
                file.with_extension(access)
            });
        }
        let partitions = config.file_groups.len().max(1);
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions];
        for (i, file) in files.into_values().enumerate() {
            groups[i % partitions].push(file);
        }
        let mut config = config.clone();
        config.file_groups = groups.into_iter().map(FileGroup::new).collect();
        Ok(DataSourceExec::from_data_source(config))
    }
}

#[async_trait]
impl TableProvider for SubsetTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        self.restrict(plan)
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        let plan = self.inner.scan_with_args(state, args).await?.into_inner();
        Ok(ScanResult::new(self.restrict(plan)?))
    }
}
