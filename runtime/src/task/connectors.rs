//! The connector factory of a task: opens the reader of a source's partition and the writer of
//! a sink, for the kind of connector the spec names.

use crate::kafka::sink::{KafkaSink, SinkTaskInfo};
use crate::kafka::source::KafkaPartitionReader;
use crate::plan::{JobPlan, SourceKind, SourcePlan};
use crate::sink::file::FileSink;
use crate::sink::stdout::StdoutSink;
use crate::sink::{Sink, SinkError};
use crate::source::file::FileReader;
use crate::source::generator::GeneratorReader;
use crate::source::{PartitionReader, SourceError};
use std::path::Path;
use weir_crds::pipeline::SinkSpec;

/// Opens partition `partition` of `source`.
pub fn open_reader(
    source: &SourcePlan,
    partition: u32,
) -> Result<Box<dyn PartitionReader>, SourceError> {
    Ok(match &source.kind {
        SourceKind::File { files, follow } => {
            let path = files.get(partition as usize).cloned().unwrap_or_default();
            Box::new(FileReader::new(&source.name, partition, path, *follow))
        }
        SourceKind::Generator(g) => Box::new(GeneratorReader::new(
            &source.name,
            g,
            partition,
            source.partitions,
        )?),
        SourceKind::Kafka(k) => Box::new(KafkaPartitionReader::new(&source.name, k, partition)?),
    })
}

/// Opens `sink` for task `task`; a file sink names its pending files after
/// `next_checkpoint_id`. The rate limit (`maxRecordsPerSecond`) is applied by the caller.
pub fn open_sink(
    plan: &JobPlan,
    sink: &SinkSpec,
    task: u32,
    next_checkpoint_id: u64,
) -> Result<Box<dyn Sink>, SinkError> {
    Ok(if let Some(f) = &sink.file {
        Box::new(FileSink::new(
            &sink.name,
            Path::new(&f.path),
            task,
            next_checkpoint_id,
        ))
    } else if let Some(k) = &sink.kafka {
        let info = SinkTaskInfo {
            namespace: plan.namespace.clone(),
            job: plan.job.clone(),
            task,
        };
        Box::new(KafkaSink::new(&sink.name, k, &info)?)
    } else {
        Box::new(StdoutSink::new(&sink.name))
    })
}
