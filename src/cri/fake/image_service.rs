//! `runtime.v1.ImageService` over the fake's state, with scripted, observable pulls.

use tonic::{Request, Response, Status};

use super::FakeCri;
use super::calls::Call;
use super::content_pull::Attempt;
use super::reference::{ImageReference, quote};
use super::scripts::PullResult;
use super::server::Dispatch;
use crate::proto::runtime::v1;
use crate::proto::runtime::v1::image_service_server::ImageService;

/// The fake's `ImageService`.
#[derive(Debug)]
pub(crate) struct FakeImageService(pub(crate) Dispatch);

fn image_name(spec: Option<&v1::ImageSpec>) -> &str {
    spec.map_or("", |spec| spec.image.as_str())
}

#[tonic::async_trait]
impl ImageService for FakeImageService {
    /// containerd 1.6 ignores the filter and lists every image.
    async fn list_images(
        &self,
        request: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        self.0
            .begin(Call::ListImages(Box::new(request.into_inner())))
            .await?;
        let images = self.0.lock().list_images();
        Ok(Response::new(v1::ListImagesResponse { images }))
    }

    /// An image that is not there is an empty response, not an error.
    async fn image_status(
        &self,
        request: Request<v1::ImageStatusRequest>,
    ) -> Result<Response<v1::ImageStatusResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::ImageStatus(Box::new(request.clone())))
            .await?;
        let image = self
            .0
            .lock()
            .image_status(image_name(request.image.as_ref()));
        Ok(Response::new(v1::ImageStatusResponse {
            image,
            ..v1::ImageStatusResponse::default()
        }))
    }

    async fn pull_image(
        &self,
        request: Request<v1::PullImageRequest>,
    ) -> Result<Response<v1::PullImageResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::PullImage(Box::new(request.clone())))
            .await?;
        let image = image_name(request.image.as_ref());
        let reference = ImageReference::parse_normalized(image).map_err(|error| {
            Status::unknown(format!(
                "failed to parse image reference {}: {error}",
                quote(image)
            ))
        })?;
        let script = self.0.lock().next_pull_script(&reference);
        let pull = PullInFlight::start(&self.0.fake);
        self.0.pull_gate().await?;
        self.0.sleep(script.duration).await?;
        let image = script.image_for(&reference);
        // Held until the image is stored, so that what this attempt wrote is collected
        // if it fails or is cancelled, and pinned by the image if it succeeds.
        let mut attempt = None;
        if let (Some(image), Some(progress)) = (&image, &script.progress)
            && !script.result.fails_resolving()
        {
            let content = attempt.insert(Attempt::begin(&self.0.fake));
            content.commit_metadata(image);
            content.fetch_layers(&self.0, image, progress).await?;
            if script.result == PullResult::Ok {
                content.unpack(&self.0, image, progress).await?;
            }
        }
        if let Some(status) = script.result.to_status(&reference) {
            pull.end(&script.result);
            return Err(status);
        }
        let image_ref = match &image {
            Some(image) => self.0.lock().add_pulled_image(&reference, image),
            None => self.0.lock().add_image(&reference),
        };
        drop(attempt);
        pull.end(&script.result);
        Ok(Response::new(v1::PullImageResponse { image_ref }))
    }

    /// Removes the image with all its tags; an image that is not there is not an error.
    async fn remove_image(
        &self,
        request: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        let request = request.into_inner();
        self.0
            .begin(Call::RemoveImage(Box::new(request.clone())))
            .await?;
        self.0
            .lock()
            .remove_image(image_name(request.image.as_ref()));
        Ok(Response::new(v1::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        request: Request<v1::ImageFsInfoRequest>,
    ) -> Result<Response<v1::ImageFsInfoResponse>, Status> {
        self.0
            .begin(Call::ImageFsInfo(Box::new(request.into_inner())))
            .await?;
        let info = self.0.lock().image_fs_info();
        Ok(Response::new(info))
    }
}

/// Counts a pull as in flight from its start until it is dropped; a pull dropped before
/// [`PullInFlight::end`] (client gone, server stopping) counts as cancelled.
struct PullInFlight {
    fake: FakeCri,
    ended: bool,
}

impl PullInFlight {
    fn start(fake: &FakeCri) -> Self {
        let mut state = fake.lock();
        let pulls = &mut state.pulls;
        pulls.started += 1;
        pulls.in_flight += 1;
        pulls.max_in_flight = pulls.max_in_flight.max(pulls.in_flight);
        drop(state);
        Self {
            fake: fake.clone(),
            ended: false,
        }
    }

    fn end(mut self, result: &PullResult) {
        let mut state = self.fake.lock();
        match result {
            PullResult::Ok => state.pulls.succeeded += 1,
            _ => state.pulls.failed += 1,
        }
        drop(state);
        self.ended = true;
    }
}

impl Drop for PullInFlight {
    fn drop(&mut self) {
        let mut state = self.fake.lock();
        state.pulls.in_flight = state.pulls.in_flight.saturating_sub(1);
        if !self.ended {
            state.pulls.cancelled += 1;
        }
    }
}
