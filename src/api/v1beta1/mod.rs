//! `apps.kruise.io/v1beta1`: the storage version since kruise 1.9 (NodeImage, ImagePullJob,
//! ImageListPullJob) and on master (ContainerRecreateRequest). There is no `v1beta1`
//! NodePodProbe.

pub mod containerrecreaterequest;
pub mod imagelistpulljob;
pub mod imagepulljob;
pub mod nodeimage;

pub use containerrecreaterequest::{
    ContainerRecreateRequest, ContainerRecreateRequestContainerRecreateState,
    ContainerRecreateRequestSpec, ContainerRecreateRequestStatus, ContainerRecreateRequestStrategy,
};
pub use imagelistpulljob::{ImageListPullJob, ImageListPullJobSpec};
pub use imagepulljob::{ImagePullJob, ImagePullJobSpec};
pub use nodeimage::{ImageSpec, NodeImage, NodeImageSpec, ReferenceObject};

pub use crate::api::shared::containerrecreaterequest::{
    ContainerRecreateRequestContainer, ContainerRecreateRequestContainerContext,
    ContainerRecreateRequestSyncContainerStatus, ProbeHandler,
};
pub use crate::api::shared::imagelistpulljob::{FailedImageStatus, ImageListPullJobStatus};
pub use crate::api::shared::imagepulljob::{
    CompletionPolicy, ImagePullJobNodeSelector, ImagePullJobPodSelector, ImagePullJobStatus,
    ImagePullJobTemplate, PullPolicy, SandboxConfig,
};
pub use crate::api::shared::nodeimage::{
    ImageStatus, ImageTagPullPolicy, ImageTagSpec, ImageTagStatus, NodeImageStatus, SyncStatus,
};
