//! The software Trussed platform the PIV applet runs on: storage, a random number generator
//! seeded from the operating system, and the backends that provide the applet's extensions.

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use trussed::{
    backend::{Backend as _, BackendId},
    pipe::TrussedChannel,
    serde_extensions::{ExtensionDispatch, ExtensionId, ExtensionImpl},
    service::ServiceResources,
    types::Context,
    virt::{self, Runner, Store, UserInterface},
};
use trussed_auth::AuthExtension;
use trussed_auth_backend::{AuthBackend, AuthContext, FilesystemLayout};
use trussed_chunked::ChunkedExtension;
use trussed_core::{
    api::{reply, request, Reply, Request},
    types::Location,
    Error,
};
use trussed_hpke::HpkeExtension;
use trussed_staging::{StagingBackend, StagingContext};
use trussed_wrap_key_to_file::WrapKeyToFileExtension;

/// The client the applet talks to.
pub type Client<'a> = virt::Client<'a, Dispatch>;

/// Backends asked in turn for each request; the core backend comes last.
const BACKENDS: &[BackendId<Backend>] = &[
    BackendId::Custom(Backend::Staging),
    BackendId::Custom(Backend::Auth),
    BackendId::Core,
];

/// The application identifier the platform files the applet's data under.
const CLIENT_ID: &str = "piv";

/// Mixed into the keys derived from the PINs; a constant is enough for a test card.
const HARDWARE_KEY: &[u8] = b"nasring virtual PIV card";

/// Runs `f` with a client of a new platform on `store`, and stops the platform after it.
pub fn run<R>(store: Store<'_>, f: impl FnOnce(Client<'_>) -> R) -> R {
    let platform = Platform {
        rng: ChaCha8Rng::from_entropy(),
        store,
        ui: UserInterface::new(),
    };
    let channel = TrussedChannel::new();
    let Some((requester, responder)) = channel.split() else {
        unreachable!("a new channel splits once")
    };
    let mut runner = Runner::new();
    runner.add_endpoint(responder, CLIENT_ID, BACKENDS);
    let client = Client::new(requester, runner.syscall(), None);
    runner.run(platform, Dispatch::new(), || f(client))
}

struct Platform<'a> {
    rng: ChaCha8Rng,
    store: Store<'a>,
    ui: UserInterface,
}

impl<'a> trussed::platform::Platform for Platform<'a> {
    type R = ChaCha8Rng;
    type S = Store<'a>;
    type UI = UserInterface;

    fn rng(&mut self) -> &mut Self::R {
        &mut self.rng
    }

    fn store(&self) -> Self::S {
        self.store
    }

    fn user_interface(&mut self) -> &mut Self::UI {
        &mut self.ui
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Auth,
    Staging,
}

#[derive(Debug, Clone, Copy)]
pub enum Extension {
    Auth,
    Chunked,
    Hpke,
    WrapKeyToFile,
}

impl From<Extension> for u8 {
    fn from(extension: Extension) -> Self {
        extension as u8
    }
}

impl TryFrom<u8> for Extension {
    type Error = Error;

    fn try_from(id: u8) -> Result<Self, Error> {
        [Self::Auth, Self::Chunked, Self::Hpke, Self::WrapKeyToFile]
            .into_iter()
            .find(|e| *e as u8 == id)
            .ok_or(Error::InternalError)
    }
}

/// Routes the applet's requests to the PIN backend, the staging backend or the core.
pub struct Dispatch {
    auth: AuthBackend,
    staging: StagingBackend,
}

#[derive(Default)]
pub struct DispatchContext {
    auth: AuthContext,
    staging: StagingContext,
}

impl Dispatch {
    fn new() -> Self {
        let mut key = trussed_core::types::Bytes::new();
        key.extend_from_slice(HARDWARE_KEY)
            .expect("the hardware key fits");
        Self {
            auth: AuthBackend::with_hw_key(Location::Internal, key, FilesystemLayout::V0),
            staging: StagingBackend::new(),
        }
    }
}

impl ExtensionDispatch for Dispatch {
    type BackendId = Backend;
    type Context = DispatchContext;
    type ExtensionId = Extension;

    fn core_request<P: trussed::Platform>(
        &mut self,
        backend: &Backend,
        ctx: &mut Context<DispatchContext>,
        request: &Request,
        resources: &mut ServiceResources<P>,
    ) -> Result<Reply, Error> {
        match backend {
            Backend::Auth => {
                let backend_ctx = &mut ctx.backends.auth;
                self.auth
                    .request(&mut ctx.core, backend_ctx, request, resources)
            }
            Backend::Staging => {
                let backend_ctx = &mut ctx.backends.staging;
                self.staging
                    .request(&mut ctx.core, backend_ctx, request, resources)
            }
        }
    }

    fn extension_request<P: trussed::Platform>(
        &mut self,
        backend: &Backend,
        extension: &Extension,
        ctx: &mut Context<DispatchContext>,
        request: &request::SerdeExtension,
        resources: &mut ServiceResources<P>,
    ) -> Result<reply::SerdeExtension, Error> {
        let core = &mut ctx.core;
        match (backend, extension) {
            (Backend::Auth, Extension::Auth) => {
                let auth_ctx = &mut ctx.backends.auth;
                self.auth
                    .extension_request_serialized(core, auth_ctx, request, resources)
            }
            (Backend::Staging, Extension::Chunked) => {
                let staging_ctx = &mut ctx.backends.staging;
                ExtensionImpl::<ChunkedExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    staging_ctx,
                    request,
                    resources,
                )
            }
            (Backend::Staging, Extension::Hpke) => {
                let staging_ctx = &mut ctx.backends.staging;
                ExtensionImpl::<HpkeExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    staging_ctx,
                    request,
                    resources,
                )
            }
            (Backend::Staging, Extension::WrapKeyToFile) => {
                let staging_ctx = &mut ctx.backends.staging;
                ExtensionImpl::<WrapKeyToFileExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    staging_ctx,
                    request,
                    resources,
                )
            }
            _ => Err(Error::RequestNotAvailable),
        }
    }
}

impl ExtensionId<AuthExtension> for Dispatch {
    type Id = Extension;
    const ID: Extension = Extension::Auth;
}

impl ExtensionId<ChunkedExtension> for Dispatch {
    type Id = Extension;
    const ID: Extension = Extension::Chunked;
}

impl ExtensionId<HpkeExtension> for Dispatch {
    type Id = Extension;
    const ID: Extension = Extension::Hpke;
}

impl ExtensionId<WrapKeyToFileExtension> for Dispatch {
    type Id = Extension;
    const ID: Extension = Extension::WrapKeyToFile;
}
