//! What the fake records about each RPC, and the faults a test can inject into one.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tonic::{Code, Status};

use crate::proto::runtime::v1;

/// Declares [`Method`] and [`Call`] from one list, so the two never disagree.
macro_rules! cri_methods {
    ($($method:ident => $request:ident,)*) => {
        /// A CRI RPC the fake serves, named as in the proto (`"PullImage"`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Method {
            $(
                #[doc = concat!("`", stringify!($method), "`.")]
                $method,
            )*
        }

        impl Method {
            /// Every method the fake serves.
            pub const ALL: &'static [Method] = &[$(Method::$method,)*];

            /// The RPC's name as in the proto, e.g. `"PullImage"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Method::$method => stringify!($method),)*
                }
            }
        }

        /// One RPC the fake received, with a copy of its request (boxed: requests
        /// differ in size by kilobytes).
        #[derive(Debug, Clone, PartialEq)]
        pub enum Call {
            $(
                #[doc = concat!("`", stringify!($method), "`.")]
                $method(Box<v1::$request>),
            )*
        }

        impl Call {
            /// Which RPC this was.
            pub fn method(&self) -> Method {
                match self {
                    $(Call::$method(_) => Method::$method,)*
                }
            }
        }
    };
}

cri_methods! {
    Version => VersionRequest,
    RunPodSandbox => RunPodSandboxRequest,
    StopPodSandbox => StopPodSandboxRequest,
    RemovePodSandbox => RemovePodSandboxRequest,
    PodSandboxStatus => PodSandboxStatusRequest,
    ListPodSandbox => ListPodSandboxRequest,
    CreateContainer => CreateContainerRequest,
    StartContainer => StartContainerRequest,
    StopContainer => StopContainerRequest,
    RemoveContainer => RemoveContainerRequest,
    ListContainers => ListContainersRequest,
    ContainerStatus => ContainerStatusRequest,
    ExecSync => ExecSyncRequest,
    Status => StatusRequest,
    ListImages => ListImagesRequest,
    ImageStatus => ImageStatusRequest,
    PullImage => PullImageRequest,
    RemoveImage => RemoveImageRequest,
    ImageFsInfo => ImageFsInfoRequest,
}

impl fmt::Display for Method {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A string that names no RPC the fake serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the fake CRI serves no method {0:?}")]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .iter()
            .copied()
            .find(|method| method.as_str() == name)
            .ok_or_else(|| UnknownMethod(name.to_owned()))
    }
}

impl TryFrom<&str> for Method {
    type Error = UnknownMethod;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        name.parse()
    }
}

/// Something that names a [`Method`]: the `Method` itself or its proto name, so that a
/// test can write `count("PullImage")` as well as `count(Method::PullImage)`.
pub trait IntoMethod {
    /// The method named.
    ///
    /// # Panics
    ///
    /// A string that names no method panics: a typo in a test must fail the test.
    fn into_method(self) -> Method;
}

impl IntoMethod for Method {
    fn into_method(self) -> Method {
        self
    }
}

impl IntoMethod for &str {
    fn into_method(self) -> Method {
        self.parse().unwrap_or_else(|error| panic!("{error}"))
    }
}

/// A scripted error: the gRPC code and message the client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn to_status(&self) -> Status {
        Status::new(self.code, self.message.clone())
    }
}

/// Faults injected per method, consulted before each RPC does its work.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// One entry per call still to fail, in order.
    next: HashMap<Method, VecDeque<Failure>>,
    /// Fails every call once `next` is used up.
    always: HashMap<Method, Failure>,
    /// Added before the method does anything else.
    latency: HashMap<Method, Duration>,
    /// Every call fails with UNAVAILABLE, as if the runtime were down.
    pub(crate) unavailable: bool,
}

impl Faults {
    pub(crate) fn fail_next(&mut self, method: Method, times: usize, failure: Failure) {
        self.next
            .entry(method)
            .or_default()
            .extend(std::iter::repeat_n(failure, times));
    }

    pub(crate) fn fail_always(&mut self, method: Method, failure: Failure) {
        self.always.insert(method, failure);
    }

    pub(crate) fn clear_failures(&mut self) {
        self.next.clear();
        self.always.clear();
    }

    pub(crate) fn set_latency(&mut self, method: Method, latency: Duration) {
        if latency.is_zero() {
            self.latency.remove(&method);
        } else {
            self.latency.insert(method, latency);
        }
    }

    pub(crate) fn latency(&self, method: Method) -> Option<Duration> {
        self.latency.get(&method).copied()
    }

    /// The failure this call of `method` must return, using up one `fail_next` entry.
    pub(crate) fn take_failure(&mut self, method: Method) -> Option<Status> {
        if let Some(failure) = self.next.get_mut(&method).and_then(VecDeque::pop_front) {
            return Some(failure.to_status());
        }
        self.always.get(&method).map(Failure::to_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip() {
        for method in Method::ALL {
            assert_eq!(method.as_str().parse::<Method>(), Ok(*method));
        }
        assert_eq!(
            "Pull".parse::<Method>(),
            Err(UnknownMethod("Pull".to_owned()))
        );
    }

    #[test]
    fn fail_next_is_used_up_before_fail_always() {
        let mut faults = Faults::default();
        let failure = |code| Failure {
            code,
            message: String::new(),
        };
        faults.fail_always(Method::ListImages, failure(Code::Internal));
        faults.fail_next(Method::ListImages, 1, failure(Code::NotFound));
        let codes: Vec<_> = (0..3)
            .map(|_| {
                faults
                    .take_failure(Method::ListImages)
                    .map(|status| status.code())
            })
            .collect();
        assert_eq!(
            codes,
            [
                Some(Code::NotFound),
                Some(Code::Internal),
                Some(Code::Internal)
            ]
        );
        assert!(faults.take_failure(Method::PullImage).is_none());
    }
}
