/**
 * The images `vireo image build KIND` knows, behind one call, so the CLI's
 * local backend and the daemon build them the same way.
 */
import { invalidArgument } from '../errors.js';
import type { VireoPaths } from '../paths.js';
import type { ImageManifest } from './manifest.js';

export const IMAGE_KINDS = ['tiny', 'debian-12'] as const;
export type ImageKind = (typeof IMAGE_KINDS)[number];

export function checkImageKind(kind: string): ImageKind {
  if (!(IMAGE_KINDS as readonly string[]).includes(kind)) throw invalidArgument('kind', `unknown image kind '${kind}' (available: ${IMAGE_KINDS.join(', ')})`);
  return kind as ImageKind;
}

export interface KindBuildOptions {
  force?: boolean;
  /** Cancels the build: the running command's process group is ended and the scratch removed. */
  signal?: AbortSignal;
  /** A step name, how far along (0..1), and a detail line from the tool running. */
  onProgress?: (step: string, fraction: number, detail?: string) => void;
}

export async function buildImageOfKind(paths: VireoPaths, kind: ImageKind, options: KindBuildOptions = {}): Promise<ImageManifest> {
  const progress = options.onProgress;
  if (kind === 'debian-12') {
    const { buildDebianImage } = await import('./debian/build.js');
    return buildDebianImage(paths, {
      force: Boolean(options.force),
      ...(options.signal ? { signal: options.signal } : {}),
      onProgress: ({ step, done, total, detail }) => progress?.(detail ? `${step}: ${detail}` : step, total > 0 ? done / total : 0, detail),
    });
  }
  const { buildTinyImage } = await import('./tiny/index.js');
  return buildTinyImage(paths, {
    force: Boolean(options.force),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(progress ? { onProgress: ({ step, done, total }) => progress(step, total > 0 ? done / total : 0) } : {}),
  });
}
