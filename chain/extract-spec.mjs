// Writes the raw genesis chain spec of Rococo Asset Hub (shipped inside
// @substrate/connect-known-chains) to a JSON file that chopsticks uses as its genesis.
// Usage: node extract-spec.mjs [output.json]   (default: asset-hub-rococo.json next to this file)
import { chainSpec } from '@substrate/connect-known-chains/rococo_v2_2_asset_hub';
import { writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? resolve(here, 'asset-hub-rococo.json'));
JSON.parse(chainSpec); // fail loudly here rather than in chopsticks if the package changed
writeFileSync(out, chainSpec);
console.log(`wrote ${out} (${chainSpec.length} bytes)`);
