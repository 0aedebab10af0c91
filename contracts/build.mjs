// Compiles every contracts/*.sol with solcjs (the `solc` npm package pinned in package.json) and
// writes contracts/build/<Name>.json = {abi, bytecode, compiler} for each deployable contract.
// Run through contracts/build.sh (or `npm run build:contracts`).
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const solc = require('solc')
const here = path.dirname(fileURLToPath(import.meta.url))
const outDir = path.join(here, 'build')

const sources = {}
for (const file of fs.readdirSync(here).filter((f) => f.endsWith('.sol')).sort())
  sources[file] = { content: fs.readFileSync(path.join(here, file), 'utf8') }

const input = {
  language: 'Solidity',
  sources,
  settings: {
    // Pinned so the bytecode runs on any anvil of the last years, whatever solc's default is.
    evmVersion: 'cancun',
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } }
  }
}

const output = JSON.parse(solc.compile(JSON.stringify(input)))
const errors = (output.errors || []).filter((e) => e.severity === 'error')
for (const e of output.errors || []) console.error(e.formattedMessage)
if (errors.length) process.exit(1)

fs.mkdirSync(outDir, { recursive: true })
for (const [file, contracts] of Object.entries(output.contracts)) {
  for (const [name, c] of Object.entries(contracts)) {
    if (!c.evm.bytecode.object) continue // abstract contracts have no bytecode
    const artifact = { abi: c.abi, bytecode: '0x' + c.evm.bytecode.object, compiler: 'solc ' + solc.version(), source: file }
    fs.writeFileSync(path.join(outDir, name + '.json'), JSON.stringify(artifact, null, 2) + '\n')
    console.log('wrote contracts/build/' + name + '.json')
  }
}
